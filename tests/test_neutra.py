"""NeuTra (:mod:`svilab.inference.neutra`): NUTS in the coordinates of a fitted guide draws the model's own
posterior, whatever the guide (NUTS corrects it), checked against a closed form; and ``posterior --neutra``."""

from __future__ import annotations

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoDiagonalNormal

from svilab.cli import main
from svilab.inference.neutra import neutra_nuts
from svilab.inference.summaries import mcmc_inference_data, summary

SD = torch.tensor([2.0, 0.1], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64) * SD[:, None] * SD[None, :]


def _model():
    pyro.sample("x", dist.MultivariateNormal(torch.tensor([1.0, -1.0], dtype=torch.float64), COV))
    with pyro.plate("p", 3):
        pyro.sample("s", dist.LogNormal(torch.tensor(0.0, dtype=torch.float64), 0.5))


def test_neutra_nuts_draws_the_models_posterior_through_an_unfitted_elementwise_guide():
    """An unfitted AutoDiagonalNormal (scale 0.1 everywhere, an elementwise affine transform): the draws, mapped
    back, are the model's sites with the model's moments (x ~ N(m, COV), s ~ LogNormal(0, 0.5) in a plate),
    within 4 Monte Carlo standard errors from ArviZ's ESS. Pyro's NeuTra alone adds an elementwise transform's
    log-Jacobian as a vector to the first site's density, counting that site D times (sds 0.45x here)."""
    pyro.set_rng_seed(0)
    guide = AutoDiagonalNormal(_model)
    guide()
    res = neutra_nuts(_model, guide, num_samples=300, warmup_steps=150, num_chains=2, seed=0, progress=False,
                      max_plate_nesting=1)
    assert res.config["reparam"] == "neutra"
    draws = res.mcmc.get_samples(group_by_chain=True)
    assert set(draws) == {"x", "s"} and draws["x"].shape == (2, 300, 2) and draws["s"].shape == (2, 300, 3)
    s = summary(mcmc_inference_data(res))
    exact = {"x[1]": (1.0, 2.0), "x[2]": (-1.0, 0.1)}
    exact.update({f"s[{i}]": (math.exp(0.125), math.sqrt((math.exp(0.25) - 1) * math.exp(0.25))) for i in (1, 2, 3)})
    for name, (mean, sd) in exact.items():
        row = s.loc[name]
        ess = float(row["ess_bulk"])
        assert abs(row["mean"] - mean) < 4 * sd / math.sqrt(ess), (name, row["mean"], mean, ess)
        # the sd's standard error: sqrt((kurtosis - 1) / (4 ess)) relative; the lognormal's excess kurtosis is ~5
        rel = math.sqrt(2.0 / ess) if name.startswith("x") else math.sqrt(7.0 / ess)
        assert abs(row["sd"] / sd - 1) < 4 * rel, (name, row["sd"], sd, ess)
    assert float(s["r_hat"].max()) < 1.05


def test_neutra_refuses_a_guide_without_a_transform():
    def guide():
        pyro.sample("x", dist.Delta(torch.zeros(2, dtype=torch.float64)).to_event(1))

    with pytest.raises(TypeError, match="NeuTra needs an AutoContinuous guide"):
        neutra_nuts(_model, guide, num_samples=5, warmup_steps=5, num_chains=1)


@pytest.fixture
def model_file(tmp_path):
    (tmp_path / "m.py").write_text(
        "import pyro\nimport pyro.distributions as dist\n\n\ndef model(data):\n"
        "    mu = pyro.sample('mu', dist.Normal(0.0, 3.0))\n"
        "    s = pyro.sample('s', dist.LogNormal(0.0, 1.0))\n"
        "    with pyro.plate('data', data['x'].shape[0]):\n"
        "        pyro.sample('x', dist.Normal(mu, s), obs=data['x'])\n")
    (tmp_path / "d.json").write_text('{"x": [0.5, 1.2, -0.3, 0.8, 0.1]}')
    return tmp_path


@pytest.mark.parametrize("argv, message", [
    (["--guides", "flow", "--neutra"], "give --nuts too"),
    (["--guides", "mvn", "--nuts", "--neutra"], "--guides has no flow"),
])
def test_posterior_neutra_options_that_cannot_work_are_refused(model_file, capsys, argv, message):
    out = model_file / "r"
    assert main(["posterior", "--model", str(model_file / "m.py"), "--data", str(model_file / "d.json"), *argv,
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not out.exists()


def test_posterior_neutra_on_the_builtin_model_is_refused(capsys, tmp_path):
    assert main(["posterior", "--guides", "flow", "--nuts", "--neutra", "--out", str(tmp_path / "r")]) == 2
    assert "--neutra needs --model" in capsys.readouterr().err


def test_posterior_neutra_runs_nuts_in_the_flows_coordinates(model_file, capsys):
    out = model_file / "r"
    assert main(["posterior", "--model", str(model_file / "m.py"), "--data", str(model_file / "d.json"),
                 "--guides", "flow", "--steps", "100", "--draws", "200", "--elbo-samples", "500", "--nuts", "--neutra",
                 "--nuts-samples", "60", "--nuts-warmup", "60", "--chains", "2", "--json", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out)
    nuts = next(m for m in res["methods"] if m["name"] == "nuts")
    assert nuts["details"]["reparam"] == "neutra (flow)" and set(nuts["params"]) == {"mu", "s"}
    flow = next(m for m in res["methods"] if m["name"] == "flow")
    # NUTS's draws are the model's: its posterior mean of mu agrees with the flow's within their spread
    assert abs(nuts["params"]["mu"]["mean"] - flow["params"]["mu"]["mean"]) < nuts["params"]["mu"]["sd"]
    assert json.loads((out / "config.json").read_text())["neutra"] is True
    assert "NUTS (NeuTra: in the coordinates of the flow guide)" in cap.err
