"""A logistic regression on many rows, fitted on subsamples (issue #21): Pyro's ``subsample_size`` idiom.

The data file holds only how to generate the rows (``{"n": 2000000, "p": 5, "seed": 0}``): X ~ N(0, 1) with
an intercept column, y ~ Bernoulli(sigmoid(X beta_true)), beta_true = (0.5, 1, -2, 0.5, 0, 1, ...), made
once per process. The model takes ``subsample_size`` as Pyro's tutorials write it:

    svilab posterior --model examples/big/logistic.py --data examples/big/logistic_2m.json \\
        --guides lognormal --batch-size 1000 --no-log-likelihood

SVI steps on 1000 rows at a time (the likelihood scaled by N/1000 by Pyro's plate); the ELBO, Pareto k-hat and
the draws use all rows (``subsample_size=None``).
"""

import functools

import pyro
import pyro.distributions as dist
import torch


@functools.lru_cache(maxsize=2)
def rows(n: int, p: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(X (n, p+1) with an intercept column, y (n,), beta_true (p+1,)), float64, from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    beta = torch.tensor([0.5, 1.0, -2.0, 0.5, 0.0, 1.0] * (1 + p // 6), dtype=torch.float64)[:p + 1]
    X = torch.cat([torch.ones(n, 1, dtype=torch.float64), torch.randn(n, p, generator=g, dtype=torch.float64)], 1)
    y = (torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(X @ beta)).to(torch.float64)
    return X, y, beta


def model(data, subsample_size=None):
    X, y, _ = rows(int(data["n"]), int(data["p"]), int(data["seed"]))
    beta = pyro.sample("beta", dist.Normal(torch.zeros(X.shape[1], dtype=X.dtype), 2.0).to_event(1))
    with pyro.plate("data", X.shape[0], subsample_size=subsample_size) as idx:
        pyro.sample("y", dist.Bernoulli(logits=(X[idx] * beta).sum(-1)), obs=y[idx])
