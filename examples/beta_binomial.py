"""Your own model with svilab: a Beta-Binomial model, fitted by SVI and NUTS, checked against
its closed-form posterior.

    p ~ Beta(a, b),   k_i | p ~ Binomial(n_i, p),   i = 1..N

The posterior is Beta(a + sum k, b + sum (n - k)) and the evidence is
log p(k) = sum_i log C(n_i, k_i) + log B(a + sum k, b + sum (n - k)) - log B(a, b),
so the KL of every guide is known exactly.

Run it:   .venv/bin/python examples/beta_binomial.py
It prints the comparison table (ELBO, KL, mean/sd and their errors against the closed form) and
the az.summary of each method.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoNormal
from torch.distributions import constraints

from svilab.inference.mcmc import run_nuts
from svilab.inference.summaries import (
    MethodResult,
    comparison_table,
    elbo_estimate,
    guide_inference_data,
    mcmc_inference_data,
    summary,
)
from svilab.inference.svi import fit

TRIALS = torch.tensor([20.0, 15.0, 30.0, 12.0, 25.0], dtype=torch.float64)
SUCCESSES = torch.tensor([6.0, 2.0, 9.0, 5.0, 7.0], dtype=torch.float64)
PRIOR = (2.0, 2.0)


# 1. The model, written the usual Pyro way (a plate over the observations).
def model(trials: torch.Tensor, successes: torch.Tensor | None = None) -> None:
    p = pyro.sample("p", dist.Beta(torch.tensor(PRIOR[0], dtype=trials.dtype),
                                   torch.tensor(PRIOR[1], dtype=trials.dtype)))
    with pyro.plate("data", len(trials)):
        pyro.sample("k", dist.Binomial(trials, p), obs=successes)


# 2. A hand-written guide in the conjugate family (so its optimum is the exact posterior),
#    parameterized by its mean m and concentration c: Beta(m c, (1 - m) c).
def beta_guide(trials: torch.Tensor, successes: torch.Tensor | None = None) -> None:
    m = pyro.param("beta_guide.mean", torch.tensor(0.5, dtype=trials.dtype), constraint=constraints.unit_interval)
    c = pyro.param("beta_guide.concentration", torch.tensor(10.0, dtype=trials.dtype),
                   constraint=constraints.positive)
    pyro.sample("p", dist.Beta(m * c, (1 - m) * c))


# 3. The closed form to check against.
def exact_posterior(trials: torch.Tensor, successes: torch.Tensor) -> tuple[float, float, float]:
    """(alpha, beta, log evidence) of the exact posterior Beta(alpha, beta)."""
    a = PRIOR[0] + float(successes.sum())
    b = PRIOR[1] + float((trials - successes).sum())

    def log_beta(x, y):
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)

    log_choose = float((torch.lgamma(trials + 1) - torch.lgamma(successes + 1)
                        - torch.lgamma(trials - successes + 1)).sum())
    return a, b, log_choose + log_beta(a, b) - log_beta(*PRIOR)


def beta_moments(a: float, b: float) -> tuple[float, float]:
    return a / (a + b), math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))


def compare(steps: int = 1500, nuts_samples: int = 500, nuts_chains: int = 4, seed: int = 0, progress=None):
    """Fit both guides and NUTS; return (comparison table, {method: InferenceData}, exact)."""
    args = (TRIALS, SUCCESSES)
    a, b, log_evidence = exact_posterior(*args)
    methods = []
    for name, guide in (("autonormal (logit-normal)", AutoNormal(model)), ("beta guide", beta_guide)):
        pyro.clear_param_store()
        result = fit(model, guide, *args, steps=steps, num_particles=16, lr=0.05, lr_final=0.001,
                     seed=seed, progress=progress)
        elbo = elbo_estimate(model, guide, *args, num_samples=100_000, seed=seed + 1)
        methods.append(MethodResult(name, guide_inference_data(model, guide, *args, num_samples=4000, seed=seed + 2),
                                    elbo=elbo.value, elbo_se=elbo.se, seconds=result.seconds,
                                    pareto_k=elbo.pareto_k))
    nuts = run_nuts(model, *args, num_samples=nuts_samples, warmup_steps=300, num_chains=nuts_chains, seed=seed,
                    progress=progress)
    methods.append(MethodResult("nuts", mcmc_inference_data(nuts), seconds=nuts.seconds))
    mean, sd = beta_moments(a, b)
    table = comparison_table(methods, reference={"p": (mean, sd)}, log_evidence=log_evidence)
    return table, {m.name: m.idata for m in methods}, {"alpha": a, "beta": b, "log_evidence": log_evidence,
                                                       "mean": mean, "sd": sd}


if __name__ == "__main__":
    table, idatas, exact = compare()
    print(f"Exact posterior: Beta({exact['alpha']:g}, {exact['beta']:g}), mean {exact['mean']:.5f}, "
          f"sd {exact['sd']:.5f}, log p(k) = {exact['log_evidence']:.5f}\n")
    print(table.to_markdown(floatfmt=".5g"))
    for name, idata in idatas.items():
        print(f"\naz.summary: {name}")
        print(summary(idata).to_markdown(floatfmt=".4g"))
