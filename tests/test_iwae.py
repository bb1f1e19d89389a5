"""IWAE_ELBO: the bound against Pyro's RenyiELBO and Trace_ELBO, against the exact log-likelihood of a
conjugate model, and the DReG gradient against the plain IWAE gradient (same expectation, smaller variance).

The conjugate model: for items n = 1..R, z_n ~ N(0, I_2), x_n | z_n ~ N(z_n, s^2 I_2), so
log p(x_n) = log N(x_n; 0, (1 + s^2) I_2) exactly. The guide has its own location and log-scale per item,
so the gradient of the loss with respect to item n's guide parameters is one independent draw of the
per-item gradient estimator: R items give R draws in one vectorized pass, and their mean and standard
error come without any loop over repetitions.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from svilab.inference.iwae_elbo import IWAE_ELBO
from svilab.models.vae import VAE, VAEConfig

X = torch.tensor([1.0, -0.5], dtype=torch.float64)


def model(x):
    s = pyro.param("s", torch.tensor(1.0, dtype=torch.float64), constraint=dist.constraints.positive)
    with pyro.plate("items", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, s).to_event(1), obs=x)


def guide(x):
    # near the exact posterior N(x / 2, 0.5 I), not on it
    loc = pyro.param("loc", x / 2 + 0.3)
    log_scale = pyro.param("log_scale", torch.full_like(x, math.log(0.5 ** 0.5 * 1.2)))
    with pyro.plate("items", len(x)):
        pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def _items(r):
    return X.expand(r, 2).clone()


NAMES = ("loc", "log_scale", "s")


def _grads(elbo, x, seed):
    """The loss and the gradients of (loc, log_scale, s), fresh parameters, the draws of ``seed``."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    if not hasattr(elbo, "differentiable_loss"):         # Pyro's RenyiELBO: its loss_and_grads
        loss = elbo.loss_and_grads(model, guide, x)
        store = pyro.get_param_store()
        return float(loss), {n: store.get_param(n).unconstrained().grad for n in NAMES}
    loss = elbo.differentiable_loss(model, guide, x)
    store = pyro.get_param_store()
    grads = torch.autograd.grad(loss, [store.get_param(n).unconstrained() for n in NAMES])
    return float(loss.detach()), dict(zip(NAMES, grads, strict=True))


def test_the_bound_and_its_gradient_are_pyros_renyi_elbo_at_alpha_0_and_trace_elbo_at_k_1():
    x = _items(6) + torch.linspace(-1, 1, 12, dtype=torch.float64).view(6, 2)
    for k in (1, 7):
        ours, g_ours = _grads(IWAE_ELBO(num_particles=k, max_plate_nesting=1), x, seed=3)
        other = (pyro.infer.Trace_ELBO(max_plate_nesting=1) if k == 1 else
                 pyro.infer.RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1))
        theirs, g_theirs = _grads(other, x, seed=3)
        assert ours == pytest.approx(theirs, rel=1e-12)
        for n in NAMES:
            torch.testing.assert_close(g_ours[n], g_theirs[n], rtol=1e-10, atol=1e-12)


def test_the_bound_rises_with_k_towards_the_exact_log_likelihood():
    r = 20_000
    x = _items(r)
    exact = float(dist.Normal(torch.zeros(2, dtype=torch.float64), 2 ** 0.5).to_event(1).log_prob(X))
    means, ses = [], []
    for k in (1, 4, 32):
        pyro.clear_param_store()
        pyro.set_rng_seed(k)
        elbo = IWAE_ELBO(num_particles=k, max_plate_nesting=1)
        log_w, _ = elbo._log_weights(model, guide, (x,), {})
        per_item = (torch.logsumexp(log_w, 0) - math.log(k)).reshape(-1).detach()       # (R,) independent
        means.append(float(per_item.mean()))
        ses.append(float(per_item.std() / math.sqrt(r)))
    for a in range(2):
        diff, se = means[a + 1] - means[a], math.hypot(ses[a], ses[a + 1])
        assert diff > 4 * se, (means, ses)                    # monotone in k, beyond the noise
    assert all(m < exact + 4 * s for m, s in zip(means, ses, strict=True))      # a lower bound
    assert exact - means[-1] < 0.01                            # and close at k = 32


def test_dreg_has_the_iwae_gradients_expectation_and_a_smaller_variance_for_the_guide():
    r, k = 20_000, 16
    x = _items(r)
    _, plain = _grads(IWAE_ELBO(num_particles=k, max_plate_nesting=1), x, seed=11)
    _, dreg = _grads(IWAE_ELBO(num_particles=k, dreg=True, max_plate_nesting=1), x, seed=12)
    for name in ("loc", "log_scale"):
        a, b = plain[name], dreg[name]                        # (R, 2): one draw per item
        se = (a.var(0) / r + b.var(0) / r).sqrt()
        assert ((a.mean(0) - b.mean(0)).abs() < 4 * se).all(), (name, a.mean(0), b.mean(0), se)
        ratio = b.var(0) / a.var(0)
        assert (ratio < 0.1).all(), (name, ratio)     # measured: below 0.001 (q is near the posterior)
    # the model's parameter keeps the IWAE gradient: with the same draws, the same number
    _, plain_same = _grads(IWAE_ELBO(num_particles=k, max_plate_nesting=1), x, seed=12)
    torch.testing.assert_close(dreg["s"], plain_same["s"], rtol=1e-10, atol=1e-10)
    # the bound's value is the same whichever gradient is asked for
    pyro.clear_param_store()
    pyro.set_rng_seed(5)
    v1 = IWAE_ELBO(num_particles=k, max_plate_nesting=1).differentiable_loss(model, guide, x[:50])
    pyro.clear_param_store()
    pyro.set_rng_seed(5)
    v2 = IWAE_ELBO(num_particles=k, dreg=True, max_plate_nesting=1).differentiable_loss(model, guide, x[:50])
    assert float(v1.detach()) == pytest.approx(float(v2.detach()), rel=1e-14)


def test_on_the_vae_it_trains_under_pyro_svi_and_matches_renyi():
    torch.manual_seed(0)
    vae = VAE(VAEConfig(latent_dim=3, hidden=(16,), batch_size=8)).double()
    x = torch.rand(8, 784, dtype=torch.float64)
    pyro.set_rng_seed(0)
    ours = IWAE_ELBO(num_particles=5, max_plate_nesting=1).loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(0)
    theirs = pyro.infer.RenyiELBO(alpha=0, num_particles=5, vectorize_particles=True,
                                  max_plate_nesting=1).loss(vae.model, vae.guide, x)
    assert ours == pytest.approx(theirs, rel=1e-12)
    pyro.clear_param_store()
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}),
                         IWAE_ELBO(num_particles=5, dreg=True, max_plate_nesting=1))
    losses = [svi.step(x) for _ in range(30)]
    assert sum(losses[-5:]) < sum(losses[:5])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="num_particles"):
        IWAE_ELBO(num_particles=0)

    def discrete_guide(x):
        with pyro.plate("items", len(x)):
            pyro.sample("z", dist.Bernoulli(0.5 * torch.ones(len(x), 2, dtype=torch.float64)).to_event(1))

    with pytest.raises(ValueError, match="guide site 'z' is not reparameterizable"):
        IWAE_ELBO(num_particles=3, max_plate_nesting=1).loss(model, discrete_guide, _items(4))

    def scaled_model(x):
        with pyro.plate("items", 10, subsample_size=len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def scaled_guide(x):
        with pyro.plate("items", 10, subsample_size=len(x)):
            pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))

    with pytest.raises(ValueError, match="is scaled"):
        IWAE_ELBO(num_particles=3, max_plate_nesting=1).loss(scaled_model, scaled_guide, _items(4))


def test_the_jit_variant_gives_the_same_loss_and_gradient_and_refuses_dreg():
    from svilab.inference.iwae_elbo import JitIWAE_ELBO
    from svilab.inference.jit_elbo import compile_quietly

    x = _items(5) + torch.linspace(-1, 1, 10, dtype=torch.float64).view(5, 2)
    jit = JitIWAE_ELBO(num_particles=4, max_plate_nesting=1)
    pyro.clear_param_store()
    compile_quietly(jit, model, guide, x)     # compiling draws numbers an eager step would not: generators put back
    store = pyro.get_param_store()
    params = [store.get_param(n).unconstrained() for n in NAMES]

    def run(elbo):
        pyro.set_rng_seed(2)
        loss = elbo.differentiable_loss(model, guide, x)
        return float(loss.detach()), torch.autograd.grad(loss, params)

    eager, g_eager = run(IWAE_ELBO(num_particles=4, max_plate_nesting=1))
    for _ in range(2):                        # through Pyro's compiled function, then the graph called directly
        value, g_jit = run(jit)
        assert value == pytest.approx(eager, rel=1e-12)
        for a, b in zip(g_jit, g_eager, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="DReG gradient cannot be JIT-compiled"):
        JitIWAE_ELBO(num_particles=4, dreg=True)
