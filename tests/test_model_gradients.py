"""The gradient lab on a user's model: the unconstrained target against Pyro's potential energy, the
gaussian family's hand-written derivatives against autograd, 1-D/2-D quadrature against scipy and
finite differences, every estimator unbiased against quadrature, and ``svilab gradients --model``."""

import json
import math
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer.mcmc.util import initialize_model
from scipy import stats

from svilab.cli import main
from svilab.inference.estimators import GRADIENT_ESTIMATORS, estimate, get_family, mean_and_se
from svilab.inference.estimators.base import check_params
from svilab.inference.exact_elbo import exact_elbo, exact_elbo_and_grad
from svilab.inference.init import make_init
from svilab.inference.potential import unconstrained_target
from svilab.models.user import float64_default

ROOT = Path(__file__).resolve().parents[1]
Y = torch.tensor([1.2, 0.4, 2.2, 1.9, 0.1, 1.5], dtype=torch.float64)


def normal_model(y=Y):
    """Unknown mean and sd: a 2-D unconstrained space (mu, log sigma)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(5.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


def flat_ordered_model(y=Y):
    """Improper prior on an ordered vector, a factor, an interval site: transforms with Jacobians."""
    mu = pyro.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
    pyro.factor("mu_prior", dist.Normal(0.0, 3.0).log_prob(mu).sum(-1))
    w = pyro.sample("w", dist.Beta(2.0, 2.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.MixtureSameFamily(dist.Categorical(probs=torch.stack([w, 1 - w], -1)),
                                                dist.Normal(mu, 1.0)), obs=y)


@pytest.fixture(autouse=True)
def f64():
    with float64_default():
        yield


@pytest.mark.parametrize("model", [normal_model, flat_ordered_model])
def test_unconstrained_target_equals_pyros_potential_energy(model):
    target = unconstrained_target(model)
    _, potential_fn, _, _ = initialize_model(model, max_plate_nesting=1, init_strategy=make_init("uniform"))
    z = 0.7 * torch.randn(target.dim, 4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    values = target(z)
    assert values.shape == (4, 3)
    for i in range(4):
        for j in range(3):
            params, start = {}, 0
            for name, k in target.sizes.items():
                params[name] = z[start:start + k, i, j].reshape(target.shapes[name])
                start += k
            assert values[i, j].item() == pytest.approx(-potential_fn(params).item(), rel=1e-12, abs=1e-12)
    # the gradient (autograd) against central finite differences
    z0 = z[:, 0, 0]
    g = target.grad(z0[:, None])[:, 0]
    h = 1e-6
    for d in range(target.dim):
        e = torch.zeros_like(z0)
        e[d] = h
        fd = (target((z0 + e)[:, None]) - target((z0 - e)[:, None])).item() / (2 * h)
        assert g[d].item() == pytest.approx(fd, rel=1e-5, abs=1e-6)


def test_gaussian_family_is_torchs_normal():
    """Its derivatives are checked against autograd with the other families (test_estimators.py)."""
    fam = get_family("gaussian")
    p = check_params((0.3, 0.7, -1.0, 0.2))
    z = fam.sample(p, torch.rand((2, 3, 7), dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    normal = torch.distributions.Normal(p[:, :1, None], p[:, 1:, None])
    torch.testing.assert_close(fam.log_prob(p, z), normal.log_prob(z))
    torch.testing.assert_close(fam.entropy(p), torch.tensor([stats.norm(0, s).entropy() for s in (0.7, 0.2)],
                                                            dtype=torch.float64))


def test_quadrature_elbo_against_gauss_hermite_and_finite_differences():
    """svilab's tanh-sinh rule against an independent rule (NumPy's Gauss-Hermite, 60 x 60 nodes)."""
    target = unconstrained_target(normal_model)
    point = (1.0, 0.3, -0.2, 0.25)
    value = float(exact_elbo(target, "gaussian", point))
    x, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / math.sqrt(2 * math.pi)
    a, b = np.meshgrid(1.0 + 0.3 * x, -0.2 + 0.25 * x, indexing="ij")
    lp = target(torch.tensor(np.stack([a, b]), dtype=torch.float64)).numpy()
    e_logp = float((w[:, None] * w[None, :] * lp).sum())
    entropy = stats.norm(0, 0.3).entropy() + stats.norm(0, 0.25).entropy()
    assert value == pytest.approx(e_logp + entropy, rel=1e-9)
    _, grad = exact_elbo_and_grad(target, "gaussian", point)
    h = 1e-5
    for k in range(4):
        up, down = list(point), list(point)
        up[k] += h
        down[k] -= h
        fd = (float(exact_elbo(target, "gaussian", up)) - float(exact_elbo(target, "gaussian", down))) / (2 * h)
        assert grad[k].item() == pytest.approx(fd, rel=1e-5, abs=1e-5)

    def one_d(y=Y):  # 1-D: sigma known, mu ~ N(0, 10): closed-form expectation of the log joint
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    t1 = unconstrained_target(one_d)
    m, s = 0.8, 0.4
    n, ybar = len(Y), Y.mean().item()
    closed = (-0.5 * ((Y - m) ** 2).sum().item() - 0.5 * n * s**2 - 0.5 * n * math.log(2 * math.pi)
              - (m**2 + s**2) / 200 - math.log(10) - 0.5 * math.log(2 * math.pi) + stats.norm(0, s).entropy())
    assert float(exact_elbo(t1, "gaussian", (m, s))) == pytest.approx(closed, rel=1e-10)
    assert ybar  # data used above


@pytest.mark.parametrize("name", GRADIENT_ESTIMATORS)
def test_every_estimator_is_unbiased_on_a_user_model(name):
    target = unconstrained_target(normal_model)
    point = (1.0, 0.3, -0.2, 0.25)
    _, exact = exact_elbo_and_grad(target, "gaussian", point)
    g = estimate(name, target, "gaussian", point, M=16, reps=16000, seed=3)
    mean, se = mean_and_se(g)
    z = ((mean - exact) / se).abs()
    assert (z < 4.5).all(), z.tolist()
    assert (4.5 * se < 0.5 * exact.abs() + 0.5).all()  # the test could see a bias of half the gradient


def test_cli_gradients_model(tmp_path, capsys):
    model = tmp_path / "m.py"
    model.write_text("import pyro, pyro.distributions as dist, torch\n\n"
                     "def model(data):\n"
                     "    print('the model prints')          # under --json this goes to stderr\n"
                     "    y = torch.as_tensor(data['y'], dtype=torch.float64)\n"
                     "    mu = pyro.sample('mu', dist.Normal(0.0, 10.0))\n"
                     "    sigma = pyro.sample('sigma', dist.HalfNormal(5.0))\n"
                     "    with pyro.plate('data', len(y)):\n"
                     "        pyro.sample('y', dist.Normal(mu, sigma), obs=y)\n")
    data = tmp_path / "d.json"
    data.write_text(json.dumps({"y": Y.tolist()}))
    argv = ["gradients", "--model", str(model), "--data", str(data), "--M", "10", "100", "--reps", "300",
            "--estimators", "reparam", "score_cv", "--point", "1,0.3,-0.2,0.25", "--json", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)                     # stdout is the JSON alone
    assert "the model prints" in captured.err
    names = ["loc[mu]", "scale[mu]", "loc[sigma]", "scale[sigma]"]
    assert list(out["exact"]["grad"]) == names and out["family"] == "gaussian"
    target = unconstrained_target(normal_model)
    _, exact = exact_elbo_and_grad(target, "gaussian", (1.0, 0.3, -0.2, 0.25))
    np.testing.assert_allclose(list(out["exact"]["grad"].values()), exact.numpy(), rtol=1e-12)
    assert {(r["estimator"], r["M"]) for r in out["results"]} == {(e, m) for e in ("reparam", "score_cv")
                                                                    for m in (10, 100)}
    for bad, msg in [(["--family", "normal"], "--family normal is for the Poisson-Gamma model"),
                     (["--point", "1,2"], "--point: expected 4 comma-separated numbers")]:
        assert main(["gradients", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "x"),
                     *bad]) == 2
        assert msg in capsys.readouterr().err
        assert not (tmp_path / "x").exists()
    assert main(["gradients", "--family", "gaussian", "--out", str(tmp_path / "y")]) == 2
    assert "--family gaussian needs --model" in capsys.readouterr().err


EIGHT = ROOT.parent / "shared" / "posteriordb" / "eight_schools-eight_schools_noncentered"


@pytest.mark.skipif(not EIGHT.exists(), reason="../shared/posteriordb not present")
def test_cli_gradients_model_with_more_than_two_dims_uses_a_monte_carlo_reference(tmp_path, capsys):
    argv = ["gradients", "--model", str(ROOT / "examples/posteriordb/eight_schools_noncentered.py"), "--data",
            str(EIGHT / "data.json"), "--M", "100", "--reps", "200", "--estimators", "reparam", "--json",
            "--no-boxplots", "--reference-samples", "65536", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["exact"]["method"] == "Monte Carlo reference (65536 reparameterization samples)"
    assert len(out["exact"]["grad_se"]) == 20
    bias = np.array(list(out["results"][0]["bias_se"].values()))
    assert np.abs(bias).max() < 4.5  # 20 components, the reference's own SE included


def test_cli_dtype_float32_poisson_gamma_and_refused_for_a_model(tmp_path, capsys):
    argv = ["gradients", "--M", "100", "--reps", "400", "--estimators", "reparam", "--json", "--no-boxplots"]
    assert main([*argv, "--dtype", "float32", "--out", str(tmp_path / "a")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["dtype"] == "float32"
    bias = np.array(list(out["results"][0]["bias_se"].values()))
    assert np.abs(bias).max() < 4.5            # unbiased against the float64 exact gradient
    model = str(ROOT / "examples/posteriordb/eight_schools_noncentered.py")
    assert main(["elbo", "--model", model, "--data", str(EIGHT / "data.json"), "--dtype", "float32",
                 "--out", str(tmp_path / "b")]) == 2
    assert "--dtype float32 is for the Poisson-Gamma model" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
