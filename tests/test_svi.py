"""SVI runner, losses, guides: checked against CAVI (closed form) and the exact posterior (quadrature)."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO

from svilab.guides import GUIDES, MeanFieldGamma, MeanFieldPositiveNormal, make_guide
from svilab.inference.cavi import GammaFactor, cavi
from svilab.inference.cavi import elbo as gamma_elbo
from svilab.inference.estimators.base import Target
from svilab.inference.exact import ExactPosterior
from svilab.inference.exact_elbo import exact_elbo
from svilab.inference.losses import make_loss
from svilab.inference.summaries import elbo_estimate
from svilab.inference.svi import DivergenceError, fit
from svilab.models import PoissonGamma


@pytest.fixture(scope="module")
def pg():
    return PoissonGamma()


@pytest.fixture(scope="module")
def exact(pg):
    return ExactPosterior(pg)


def _gamma_factors(guide):
    f = guide.factors()
    return [GammaFactor(f[s].concentration.item(), f[s].rate.item()) for s in "uv"]


def _set_params(guide, values):
    """Set a mean-field guide's parameters (``{(field, site): value}``) through the guide itself."""
    guide()
    with torch.no_grad():
        for (name, site), value in values.items():
            setattr(getattr(guide, name), site, torch.tensor(value, dtype=torch.float64))


def test_gamma_guide_reaches_the_cavi_optimum(pg):
    """The mean-field Gamma family is CAVI's: SVI must reach CAVI's ELBO (closed form, no MC)."""
    q = cavi(pg)
    guide = MeanFieldGamma(pg.model)
    fit(pg.model, guide, steps=2000, num_particles=16, lr=0.02, lr_final=0.0005, jit=True, seed=0)
    q_u, q_v = _gamma_factors(guide)
    gap = q.elbo - gamma_elbo(pg, q_u, q_v)
    assert 0 <= gap < 0.005  # CAVI is the optimum: SVI cannot beat it, and gets within 0.005 nats
    assert q_u.mean == pytest.approx(q.q_u.mean, rel=0.02)
    assert q_v.mean == pytest.approx(q.q_v.mean, rel=0.02)
    assert q_u.shape == pytest.approx(q.q_u.shape, rel=0.1)


def test_mc_elbo_matches_closed_form_and_quadrature(pg):
    """elbo_estimate (vectorized MC over Pyro traces) vs independent closed form / quadrature."""
    guide = MeanFieldGamma(pg.model)
    _set_params(guide, {("concentration", "u"): 30.0, ("mean", "u"): 4.5, ("concentration", "v"): 20.0,
                        ("mean", "v"): 0.9})
    f = guide.factors()
    assert (f["u"].concentration.item(), f["u"].mean.item(), f["v"].rate.item()) == pytest.approx((30.0, 4.5, 20 / 0.9))
    est = elbo_estimate(pg.model, guide, num_samples=200_000, seed=1)
    closed = gamma_elbo(pg, GammaFactor(30.0, 30 / 4.5), GammaFactor(20.0, 20 / 0.9))
    assert abs(est.value - closed) < 4 * est.se and est.se < 0.01

    pyro.clear_param_store()
    normal = MeanFieldPositiveNormal(pg.model)
    _set_params(normal, {("loc", "u"): 4.0, ("scale", "u"): 1.5, ("loc", "v"): 0.8, ("scale", "v"): 0.4})
    est = elbo_estimate(pg.model, normal, num_samples=200_000, seed=2)
    quad = float(exact_elbo(Target.from_poisson_gamma(pg), "normal", [4.0, 1.5, 0.8, 0.4]))
    assert abs(est.value - quad) < 4 * est.se


@pytest.mark.parametrize("name, max_kl", [("mvn", 0.012), ("flow", 0.004)])
def test_full_rank_and_flow_guides_get_close_to_the_exact_posterior(pg, exact, name, max_kl):
    """Mean-field KL is 0.87 nats (CAVI); full-rank and flow guides must be within a few 1e-3."""
    guide = make_guide(name, pg.model)
    steps, particles, lr = (800, 128, 0.03) if name == "flow" else (2000, 16, 0.02)
    fit(pg.model, guide, steps=steps, num_particles=particles, lr=lr, lr_final=lr / 40,
        jit=name == "mvn", seed=0)
    est = elbo_estimate(pg.model, guide, num_samples=100_000, seed=1)
    kl = exact.log_evidence - est.value
    assert -4 * est.se < kl < max_kl
    draws = guide.get_posterior().sample((20_000,)).exp() if name == "mvn" else None
    if draws is not None:  # moments of the full-rank guide against the exact ones
        assert draws[:, 0].mean().item() == pytest.approx(exact.mean["u"], rel=0.02)
        assert draws[:, 1].std().item() == pytest.approx(exact.sd["v"], rel=0.05)


def test_notebook_normal_guide_fit_matches_its_quadrature_elbo(pg, exact):
    """The truncated-Normal guide: SVI's final loss agrees with the exact ELBO at its parameters."""
    guide = make_guide("normal", pg.model)
    result = fit(pg.model, guide, steps=1500, num_particles=16, lr=0.02, lr_final=0.0005, jit=True, seed=3)
    f = guide.factors()
    params = [getattr(f[s], p).item() for s in "uv" for p in ("loc", "scale")]
    quad = float(exact_elbo(Target.from_poisson_gamma(pg), "normal", params))
    assert exact.log_evidence - quad == pytest.approx(0.888, abs=0.01)  # mean-field: ~CAVI's 0.873
    tail = result.history[-150:]
    assert abs(-tail.mean() - quad) < 4 * tail.std() / math.sqrt(len(tail)) + 0.005


def test_fit_is_reproducible_and_reports(pg):
    runs = []
    for _ in range(2):
        pyro.clear_param_store()
        runs.append(fit(pg.model, make_guide("lognormal", pg.model), steps=50, num_particles=4, seed=7))
    np.testing.assert_array_equal(runs[0].history, runs[1].history)
    r = runs[0]
    assert r.steps_done == 50 and len(r.history) == 50 and r.seconds > 0
    assert set(r.params) == set(pyro.get_param_store().keys())


def test_stopping_rule_ends_a_converged_run(pg):
    guide = make_guide("gamma", pg.model)
    r = fit(pg.model, guide, steps=5000, num_particles=8, lr=0.05, seed=0, stop_tol=0.5, check_every=100,
            patience=2)
    assert r.stopped_early and r.steps_done < 5000 and "stopping rule" in r.message


def test_divergence_stops_with_message_and_keeps_last_finite_params():
    calls = {"n": 0}

    def model():
        calls["n"] += 1
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        x = torch.tensor(math.nan if calls["n"] > 6 else 1.0)
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide():
        loc = pyro.param("loc", torch.tensor(0.0))
        pyro.sample("z", dist.Normal(loc, 1.0))

    with pytest.raises(DivergenceError) as err:
        fit(model, guide, steps=100, lr=0.1, seed=0, max_plate_nesting=0, validate=False)
    # the model turns NaN on its 7th call; fit's one sample-free trace (sites, memory check) is the first,
    # so step 6 is the first NaN step: five good updates are kept
    assert "became nan at step 6 of 100" in str(err.value) and "after step 5" in str(err.value)
    assert len(err.value.result.history) == 5 and np.isfinite(err.value.result.history).all()
    loc = pyro.param("loc").item()
    assert math.isfinite(loc) and loc == err.value.result.params["loc"].item() and loc != 0.0


@pytest.mark.parametrize("kwargs, msg", [
    ({"steps": 0}, "steps must be >= 1"),
    ({"num_particles": 0}, "particles must be >= 1"),
    ({"loss": "kl_elbo"}, "unknown loss 'kl_elbo'; known: trace_elbo"),
    ({"loss": "renyi", "num_particles": 1}, "renyi: needs num_particles >= 2"),
    ({"lr": -1.0}, "lr must be a finite positive number"),
])
def test_fit_bad_input(pg, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        fit(pg.model, make_guide("gamma", pg.model), **kwargs)


def test_losses_by_name():
    assert isinstance(make_loss("Trace_ELBO"), Trace_ELBO)
    renyi = make_loss("renyi", alpha=0.0, num_particles=8)
    assert isinstance(renyi, RenyiELBO) and renyi.alpha == 0.0 and renyi.num_particles == 8
    with pytest.raises(ValueError, match="alpha must be a number other than 1"):
        make_loss("renyi", alpha=1.0, num_particles=4)


def test_renyi_alpha0_bound_lies_between_elbo_and_evidence(pg, exact):
    """Renyi alpha=0 with K samples is the IWAE bound: ELBO <= bound <= log p(x) (on average)."""
    guide = make_guide("gamma", pg.model)
    fit(pg.model, guide, steps=600, num_particles=8, lr=0.05, lr_final=0.002, seed=0)
    elbo = elbo_estimate(pg.model, guide, num_samples=50_000, seed=1).value
    loss = make_loss("renyi", alpha=0.0, num_particles=64)
    iwae = -np.mean([loss.loss(pg.model, guide) for _ in range(200)])
    assert elbo + 0.3 < iwae < exact.log_evidence + 0.01


def test_unknown_guide_lists_known_names(pg):
    with pytest.raises(ValueError, match="unknown guide 'iaf'; known: " + ", ".join(GUIDES)):
        make_guide("iaf", pg.model)


def test_mean_field_guides_refuse_models_they_cannot_fit():
    def real_model():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    def local_model():
        with pyro.plate("n", 3):
            pyro.sample("z", dist.Gamma(2.0, 1.0))

    with pytest.raises(ValueError, match="support .* not \\(0, inf\\)"):
        MeanFieldGamma(real_model)()
    with pytest.raises(ValueError, match="inside a plate"):
        MeanFieldPositiveNormal(local_model)()


def test_stopping_rule_against_the_moving_average_written_out():
    """The rule on a known series: the EMA and the calm-window count computed by hand in float64."""
    from svilab.inference.svi import StoppingRule

    rng = np.random.default_rng(0)
    losses = 10.0 * np.exp(-np.arange(2000) / 150.0) + 0.01 * rng.standard_normal(2000)
    rule = StoppingRule(tol=0.05, check_every=50, patience=3, smoothing=0.9)
    stop_at = next(i for i in range(50, 2001, 50) if rule.update(losses[i - 50:i]))
    ema, prev, calm, expected = math.nan, math.nan, 0, None
    for i, v in enumerate(losses, 1):
        ema = v if math.isnan(ema) else 0.9 * ema + 0.1 * v
        if i % 50 == 0:
            calm = calm + 1 if prev - ema < 0.05 else 0
            prev = ema
            if calm >= 3:
                expected = i
                break
    assert stop_at == expected and rule.smooth == pytest.approx(ema, rel=1e-12)
    # the first window can never be calm (nothing to compare it with)
    assert StoppingRule(1e9, check_every=10, patience=1).update(np.ones(10)) is False


def test_svi_primitives_give_fit_s_numbers_and_fit_rejects_a_misspelt_option(pg):
    """SVI.init/step by hand = fit (same seed, same losses bit for bit); a misspelt keyword is a
    TypeError instead of a silent model argument; model_kwargs reach the model."""
    from svilab.inference.svi import SVI

    pyro.clear_param_store()
    r = fit(pg.model, make_guide("lognormal", pg.model), steps=30, num_particles=4, lr=0.05, seed=3,
            max_plate_nesting=1)
    pyro.clear_param_store()
    pyro.set_rng_seed(3)
    guide = make_guide("lognormal", pg.model)
    from svilab.inference.optim import ClippedAdam

    svi = SVI(pg.model, guide, ClippedAdam(lr=0.05, steps=30), make_loss("trace_elbo", num_particles=4,
                                                                          max_plate_nesting=1))
    by_hand = [svi.step() for _ in range(30)]
    np.testing.assert_array_equal(r.history, by_hand)
    with pytest.raises(TypeError, match="num_particle"):
        fit(pg.model, make_guide("lognormal", pg.model), steps=5, num_particle=4)

    def scaled(scale=1.0):
        pyro.sample("z", dist.Normal(0.0, scale))

    pyro.clear_param_store()
    g = make_guide("lognormal", scaled)
    fit(scaled, g, steps=400, num_particles=8, lr=0.05, lr_final=0.005, seed=0, model_kwargs={"scale": 3.0})
    assert float(pyro.param("AutoNormal.scales.z")) == pytest.approx(3.0, rel=0.15)
