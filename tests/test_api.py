"""The Python API (#17): one import, Pyro's SVI signature with Pyro's numbers, every option used or
refused, and the docstring examples run."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import subprocess
import sys

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI as PyroSVI
from pyro.infer import RenyiELBO, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

import svilab


def regression(X, y=None, prior_scale=10.0):
    beta = pyro.sample("beta", dist.Normal(X.new_zeros(()), prior_scale).expand([X.shape[1]]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(X.new_tensor(2.0)))
    with pyro.plate("data", X.shape[0]):
        return pyro.sample("y", dist.Normal((X * beta).sum(-1), sigma), obs=y)    # vectorizes over draws


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 2, generator=g)
    y = X @ torch.tensor([1.0, -2.0]) + 0.5 * torch.randn(40, generator=g)
    return X, y


def test_import_svilab_is_light_and_every_public_name_resolves():
    """``import svilab`` loads no torch (the sweep's watchdog imports it); every name of its
    ``__all__`` and of every module's ``__all__`` exists."""
    out = subprocess.run([sys.executable, "-c", "import sys, svilab; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    missing = [n for n in svilab.__all__ if getattr(svilab, n, None) is None]
    assert not missing
    without = []
    for info in pkgutil.walk_packages(svilab.__path__, "svilab."):
        if ".experiments." in info.name or info.name.endswith("__main__"):
            continue
        mod = importlib.import_module(info.name)
        public = [n for n, v in vars(mod).items()
                  if not n.startswith("_") and getattr(v, "__module__", None) == mod.__name__ and callable(v)]
        if public and not hasattr(mod, "__all__"):
            without.append(info.name)
        for n in getattr(mod, "__all__", []):
            assert hasattr(mod, n), f"{info.name}.__all__ names {n}, which does not exist"
    assert not without, f"modules without __all__: {without}"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        svilab.nope  # noqa: B018


@pytest.mark.parametrize("optim", ["adam", "clipped", "sgd"])
def test_svi_with_pyro_s_signature_gives_pyro_s_numbers(data, optim):
    """svilab.SVI(model, guide, optim, loss).step(X, y) against pyro.infer.SVI with the same
    optimizer and seed: the same losses and parameters after 50 steps. Adam and ClippedAdam run in
    svilab's fused kernel (to float rounding: torch's Adam adds eps after the bias correction, Pyro's
    ClippedAdam before, 1e-8 apart); any other optimizer (SGD) runs as Pyro runs it (the same
    parameters bit for bit; the losses as float32 sums, Pyro's as float64 sums of particles)."""
    X, y = data
    make = {"adam": lambda: pyro.optim.Adam({"lr": 0.05}),
            "clipped": lambda: pyro.optim.ClippedAdam({"lr": 0.05, "clip_norm": 2.0, "lrd": 0.99}),
            "sgd": lambda: pyro.optim.SGD({"lr": 0.002})}[optim]
    runs = []
    for cls in (PyroSVI, svilab.SVI):
        pyro.clear_param_store()
        pyro.set_rng_seed(1)
        guide = AutoNormal(regression)
        svi = cls(regression, guide, make(), Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1))
        losses = [svi.step(X, y=y) for _ in range(50)]
        runs.append((np.array(losses), {k: v.detach().clone() for k, v in pyro.get_param_store().items()}))
    (l0, p0), (l1, p1) = runs
    tol = 0.0 if optim == "sgd" else 1e-5
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    assert p0.keys() == p1.keys()
    for k in p0:
        torch.testing.assert_close(p1[k], p0[k], rtol=tol, atol=tol)
    assert np.ptp(l0) > 1.0          # the run moved: the comparison is not of two starting points


def test_svi_run_passes_every_argument_to_the_model_and_guards_any_optimizer(data):
    """run(num_steps, *args, **kwargs): keywords named like svilab options (steps, seed) reach the
    model; a divergent SGD run stops with DivergenceError keeping the last finite parameters."""
    X, y = data
    seen = {}

    def model(X, y=None, steps=None, seed=None):
        seen.update(steps=steps, seed=seed)
        return regression(X, y)

    pyro.clear_param_store()
    svi = svilab.SVI(model, AutoNormal(model), svilab.ClippedAdam(lr=0.05, lr_final=0.005), Trace_ELBO())
    result = svi.run(20, X, y=y, steps=7, seed=3)
    assert seen == {"steps": 7, "seed": 3} and result.steps_done == 20
    pyro.clear_param_store()
    svi = svilab.SVI(regression, AutoNormal(regression), pyro.optim.SGD({"lr": 1e6}), Trace_ELBO(), check_every=5)
    with pytest.raises(svilab.DivergenceError, match="smaller learning rate") as exc:
        svi.run(200, X, y=y)
    assert exc.value.result.steps_done < 200
    assert all(torch.isfinite(v).all() for v in pyro.get_param_store().values())


def test_fit_takes_model_keywords_and_refuses_options_it_would_ignore(data):
    X, y = data
    pyro.clear_param_store()
    r = svilab.fit(regression, AutoNormal(regression), X, y=y, prior_scale=5.0, steps=20, seed=0)
    assert r.steps_done == 20
    cases = [
        (dict(loss=Trace_ELBO(), num_particles=64), "num_particles=64, which a loss object would ignore"),
        (dict(loss=Trace_ELBO(), alpha=0.3), "alpha=0.3"),
        (dict(optim=pyro.optim.Adam({"lr": 0.1}), lr=0.5), "lr=0.5, which that optimizer would ignore"),
        (dict(loss="renyi", num_particles=2, jit=True), "'renyi' has no JIT-compiled variant"),
        (dict(prior_scal=5.0), "unexpected keyword argument 'prior_scal'"),
        (dict(model_kwargs={"prior_scale": 1.0}, prior_scale=2.0), "given twice \\(as keywords and in model_kwargs\\)"),
    ]
    for kwargs, message in cases:
        with pytest.raises((ValueError, TypeError), match=message):
            svilab.fit(regression, AutoNormal(regression), X, y=y, steps=2, **kwargs)
    with pytest.raises(ValueError, match="num_particles = 1000000000 .* needs about"):
        svilab.fit(regression, AutoNormal(regression), X, y=y, steps=2, num_particles=10**9)
    with pytest.raises(ValueError, match="cannot be compiled"):
        svilab.fit(regression, svilab.make_guide("flow", regression), X, y=y, steps=2, jit=True)
    with pytest.raises(TypeError, match="optim must be a pyro.optim optimizer"):
        svilab.SVI(regression, AutoNormal(regression), torch.optim.Adam, Trace_ELBO())


def test_renyi_by_name_has_pyro_s_default_alpha():
    """make_loss('renyi') is RenyiELBO() (alpha 0, the IWAE bound), as in Pyro."""
    assert svilab.make_loss("renyi", num_particles=2).alpha == RenyiELBO().alpha == 0.0


@pytest.mark.parametrize("module", ["svilab", "svilab.inference.svi", "svilab.inference.optim",
                                    "svilab.inference.estimators", "svilab.inference.jsd_elbo",
                                    "svilab.inference.estimators.reference", "svilab.inference.evaluate"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_the_gradient_lab_refuses_a_family_that_does_not_fit_the_target():
    """A user model's target is its unconstrained space (the real line): the truncated ``normal``
    family, which draws positive z, is refused by name instead of giving wrong means; the
    Poisson-Gamma target takes it; a wrong-length point names the dimension."""
    from svilab.inference.estimators import Target, estimate

    def regression_2(X, y=None):
        return regression(X, y)

    X = torch.randn(10, 2, dtype=torch.float64)
    target = svilab.unconstrained_target(regression_2, X, X @ torch.tensor([1.0, -1.0], dtype=torch.float64))
    assert target.dim == 3 and target.support == "real"
    with pytest.raises(ValueError, match="family 'normal' draws positive z, but this target lives on the real "
                                         "line .*use 'gaussian'"):
        estimate("reparam", target, "normal", [0.0, 0.1] * 3, M=4, reps=2)
    with pytest.raises(ValueError, match="expected 6 numbers \\(a loc and a scale for each of the 3 latent"):
        estimate("reparam", target, "gaussian", [0.0, 0.1] * 2, M=4, reps=2)
    assert estimate("reparam", target, "gaussian", [0.0, 0.1] * 3, M=4, reps=2).shape == (2, 6)
    pg = Target.from_poisson_gamma(svilab.PoissonGamma())
    assert estimate("reparam", pg, "normal", [5.0, 0.5, 1.0, 0.2], M=4, reps=2).shape == (2, 4)


def test_help_is_written_for_users():
    """Every command's --help: no Sphinx roles or literal quotes, no developer notes, one default per
    option, lists shown as typed."""
    import re

    from svilab.cli import build_parser, command_parsers

    parser = build_parser()
    texts = {"svilab": parser.format_help()}
    texts.update({name: p.format_help() for name, p in command_parsers(parser).items()})
    texts["vae"] = parser.subcommands.choices["vae"].format_help()
    assert len(texts) >= 9
    for name, text in texts.items():
        flat = " ".join(text.split())
        assert not re.search(r":(func|class|mod|meth|data):|``|Layers:|argparse layer|svilab/\w+\.py", flat), name
        assert not re.search(r"\(default[^()]*(\([^()]*\)[^()]*)*\)\s*\(default", flat), name
        assert "['" not in flat, name


def test_summary_names_coordinates_as_the_tables_do():
    """summary() rows are Stan's 1-based names (beta[1]), as in svilab's tables and posteriordb's
    references; named coordinates are left as they are."""
    import arviz as az

    draws = np.random.default_rng(0).normal(size=(2, 50, 3))
    assert list(svilab.summary(az.from_dict(posterior={"beta": draws})).index) == ["beta[1]", "beta[2]", "beta[3]"]
    named = az.from_dict(posterior={"beta": draws}, coords={"k": ["a", "b", "c"]}, dims={"beta": ["k"]})
    assert list(svilab.summary(named).index) == ["beta[a]", "beta[b]", "beta[c]"]


def test_evaluate_guide_warns_about_a_bad_guide():
    """A guide far from the posterior (not fitted, started 20 sds off with a tiny scale): the check
    returns the k-hat warning and issues it as a UserWarning."""
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    pyro.clear_param_store()
    x = torch.tensor([1.0, 2.0, 3.0])
    guide = AutoNormal(model, init_loc_fn=lambda site: torch.tensor(14.0), init_scale=0.05)
    with pytest.warns(UserWarning, match="k-hat"):
        check = svilab.evaluate_guide(model, guide, x, draws=200, elbo_samples=2000, seed=0)
    assert check.elbo.pareto_k > 0.7 and any("k-hat" in w for w in check.warnings)


def test_the_pyro_user_example_runs():
    """examples/pyro_user.py (--quick): the script a Pyro user writes runs unchanged; its numbers are
    checked where they have an independent value (the IWAE bound of an exact guide, the gradient
    against the reference, the ELBO-trained guide above the GJS-trained one in ELBO)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "pyro_user.py"
    spec = importlib.util.spec_from_file_location("pyro_user_example", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.warns(UserWarning):          # the rough-fit warnings of the quick run are issued
        out = mod.main(quick=True)
    assert out["max_z"] < 4.5 and out["elbo"] > out["gjs_elbo"]
    assert abs(out["gjs_joint_elbo"]) < float("inf")          # a joint autoguide trains under GJS (finite ELBO)
    assert out["iwae"] == pytest.approx(out["exact_log_px"], abs=1e-4)


def test_docs_api_lists_every_public_name():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    assert [n for n in svilab.__all__ if f"`svilab.{n}`" not in text] == []


def test_model_arguments_named_like_options_reach_the_model():
    """A model argument called seed / num_samples / chunk goes in model_kwargs and reaches the model in
    guide_draws, elbo_estimate and evaluate_guide."""
    seen = []

    def model(x, seed=None, chunk=None):
        seen.append((seed, chunk))
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    pyro.clear_param_store()
    x = torch.tensor([1.0, 2.0])
    guide = AutoNormal(model)
    svilab.fit(model, guide, x, steps=5, model_kwargs={"seed": 11, "chunk": 3})
    seen.clear()
    check = svilab.evaluate_guide(model, guide, x, draws=50, elbo_samples=100, seed=0, warn=False,
                                  model_kwargs={"seed": 11, "chunk": 3})
    assert seen and all(s == (11, 3) for s in seen) and check.idata.posterior["mu"].shape == (1, 50)
    with pytest.raises(TypeError, match="given twice"):
        svilab.guide_draws(model, guide, x, num_samples=10, model_kwargs={"scale": 3}, scale=2)


def test_every_public_name_and_method_has_a_docstring():
    import inspect

    missing = []
    for name in svilab.__all__:
        obj = getattr(svilab, name)
        if isinstance(obj, (dict, list, str)):
            continue
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if not attr.startswith("_") and (callable(value) or isinstance(value, property)):
                    if not inspect.getdoc(value if isinstance(value, property) else getattr(obj, attr)):
                        missing.append(f"{name}.{attr}")
    assert missing == []
