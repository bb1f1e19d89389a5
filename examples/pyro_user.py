"""svilab from Python, written the way Pyro's tutorials write SVI: one import, Pyro's signatures.

A hierarchical logistic regression (groups with their own intercepts, a shared slope), fitted with
``svilab.SVI(model, guide, optim, loss)`` exactly as with ``pyro.infer.SVI``, under the ELBO and
under the skew geometric Jensen-Shannon objective with an autoguide, then checked with svilab's
diagnostics and turned into ArviZ InferenceData; then a user-written VAE pair evaluated with
svilab's VAE tools, and the gradient-estimator lab on the same regression. Each numbered section
shows one point of the Python API (issue #17):

 1. one import: ``svilab.SVI``, ``svilab.fit``, ``svilab.GJS_ELBO``, ...
 2. ``svilab.SVI(model, guide, pyro.optim.Adam(...), Trace_ELBO())``: Pyro's signature and numbers
 3. every option used or refused; Pyro's defaults (``renyi``: alpha 0, no global reseeding)
 4. the GJS objective on an autoguide (AutoNormal; and AutoMultivariateNormal, which draws all sites jointly)
 5. the VAE evaluation (ELBO, importance-weighted log-likelihood) on any model/guide pair
 6. the gradient lab on a user model: the family checked, the reference gradient in the library
 7. guide names and what they are
 8. no JIT warnings, messages in Python's terms
 9. docstrings with runnable examples (``help(svilab.SVI)``)
10. ``svilab COMMAND --help`` for users

Run it:   .venv/bin/python examples/pyro_user.py          (about 20 s; --quick: a few seconds)
"""

from __future__ import annotations

import sys
import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

import svilab  # 1. one import


def model(group, x, y=None, n_groups=4):
    """Hierarchical logistic regression: y_i ~ Bernoulli(sigmoid(a[group_i] + b x_i))."""
    mu_a = pyro.sample("mu_a", dist.Normal(0.0, 2.0))
    sigma_a = pyro.sample("sigma_a", dist.HalfNormal(1.0))
    b = pyro.sample("b", dist.Normal(0.0, 2.0))
    with pyro.plate("groups", n_groups):
        a = pyro.sample("a", dist.Normal(mu_a, sigma_a))
    with pyro.plate("data", len(x)):
        return pyro.sample("y", dist.Bernoulli(logits=a[..., group] + b * x), obs=y)


def data(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    group = torch.randint(0, 4, (n,), generator=g)
    x = torch.randn(n, generator=g)
    a = torch.tensor([-1.0, 0.0, 0.5, 1.5])
    y = torch.bernoulli(torch.sigmoid(a[group] + 1.2 * x), generator=g)
    return group, x, y


def main(quick: bool = False) -> dict:
    steps = 300 if quick else 2000
    group, x, y = data()
    out = {}

    # 2. Pyro's signature: the loop from Pyro's tutorials, unchanged but for the SVI class
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(model)
    svi = svilab.SVI(model, guide, pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.999}), Trace_ELBO(num_particles=4))
    for step in range(steps):
        loss = svi.step(group, x, y)
        if step % max(1, steps // 4) == 0:
            print(f"step {step:5d}  loss {loss:9.2f}")
    check = svilab.evaluate_guide(model, guide, group, x, y, draws=1000, elbo_samples=5000, seed=0)
    print(svilab.summary(check.idata, ["mu_a", "sigma_a", "b", "a"])[["mean", "sd", "hdi_3%", "hdi_97%"]])
    print(f"ELBO {check.elbo.value:.2f} +- {check.elbo.se:.2f}, Pareto k-hat {check.elbo.pareto_k:.2f}; "
          f"warnings: {check.warnings or 'none'}")
    out["elbo"] = check.elbo.value

    # ... or the one call with svilab's stopping rule and divergence guard
    pyro.clear_param_store()
    fitted = svilab.fit(model, AutoNormal(model), group, x, y=y, n_groups=4, steps=steps, num_particles=4,
                        lr=0.05, lr_final=0.002, seed=0, stop_tol=0.05)
    print(f"fit: {fitted.message} ({fitted.steps_done} steps)")

    # 3. options a loss object would ignore are refused; renyi has Pyro's default alpha
    for kwargs in ({"loss": Trace_ELBO(), "num_particles": 64}, {"optim": pyro.optim.Adam({"lr": 0.1}), "lr": 0.5}):
        try:
            svilab.fit(model, AutoNormal(model), group, x, y, steps=1, **kwargs)
        except ValueError as exc:
            print(f"refused: {exc}")
    print(f"renyi alpha by default: {svilab.make_loss('renyi', num_particles=2).alpha} (Pyro's RenyiELBO: 0)")

    # 4. the GJS objective on an autoguide
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    gjs_guide = AutoNormal(model)
    svilab.SVI(model, gjs_guide, svilab.ClippedAdam(lr=0.05, lr_final=0.002), svilab.GJS_ELBO(alpha=0.5)).run(
        steps, group, x, y)
    gjs = svilab.evaluate_guide(model, gjs_guide, group, x, y, draws=1000, elbo_samples=5000, seed=0, warn=False)
    print(f"GJS-trained guide: ELBO {gjs.elbo.value:.2f} (ELBO-trained: {check.elbo.value:.2f}); "
          f"b = {float(gjs.idata.posterior['b'].mean()):.2f}")
    out["gjs_elbo"] = gjs.elbo.value
    pyro.clear_param_store()                  # a joint autoguide: the divergence of its joint, by Monte Carlo
    joint = AutoMultivariateNormal(model)
    svilab.SVI(model, joint, svilab.ClippedAdam(lr=0.05, lr_final=0.002), svilab.GJS_ELBO(alpha=0.5)).run(
        steps // 2, group, x, y)
    gjs_joint = svilab.evaluate_guide(model, joint, group, x, y, draws=1000, elbo_samples=5000, seed=0, warn=False)
    print(f"GJS-trained AutoMultivariateNormal: ELBO {gjs_joint.elbo.value:.2f}")
    out["gjs_joint_elbo"] = gjs_joint.elbo.value

    # 5. the VAE tools on a pair you wrote (here a linear-Gaussian one whose log p(x) is known)
    W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])

    def vae_model(xs):
        with pyro.plate("images", len(xs)):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T, 0.5).to_event(1), obs=xs)

    post_var = 1.0 / (1.0 + (W ** 2).sum(0) / 0.25)

    def vae_guide(xs):
        with pyro.plate("images", len(xs)):
            pyro.sample("z", dist.Normal(post_var * (xs @ W) / 0.25, post_var.sqrt()).to_event(1))

    xs = torch.randn(50, 3) * 2
    exact = dist.MultivariateNormal(torch.zeros(3), W @ W.T + 0.25 * torch.eye(3)).log_prob(xs).mean()
    iw, _ = svilab.iwae_log_likelihood(vae_model, vae_guide, xs, k=100)
    print(f"VAE tools on your pair: IWAE log p(x) {iw:.4f}, exact {float(exact):.4f}")
    out["iwae"], out["exact_log_px"] = iw, float(exact)

    # 6. the gradient lab on the regression: the family must fit the target (the real line here)
    target = svilab.unconstrained_target(model, group, x.double(), y.double())
    point = [0.0, 0.1] * target.dim
    try:
        svilab.estimate("reparam", target, "normal", point, M=8, reps=4)
    except ValueError as exc:
        print(f"refused: {exc}")
    reps = svilab.estimate("reparam", target, "gaussian", point, M=64, reps=200).numpy()
    ref = svilab.reference_gradient(target, "gaussian", point, samples=2**14 if quick else 2**17)
    z = (reps.mean(0) - ref.grad) / (reps.std(0, ddof=1) ** 2 / len(reps) + ref.grad_se ** 2) ** 0.5
    print(f"reparameterization gradient (M=64, 200 reps) vs {ref.method}: largest |difference| = "
          f"{abs(z).max():.1f} standard errors over {len(z)} coordinates")
    out["max_z"] = float(abs(z).max())

    # 7. guide names: what each is, and the other names it answers to
    from svilab.guides import GUIDE_ALIASES

    for name, what in svilab.GUIDES.items():
        also = ", ".join(a for a, n in GUIDE_ALIASES.items() if n == name)
        print(f"  guide {name:10s} {what}{f' (also: {also})' if also else ''}")
    return out


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)   # 8. none is shown
        main(quick="--quick" in sys.argv)
