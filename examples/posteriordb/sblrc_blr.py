"""posteriordb ``sblrc-blr``: Bayesian linear regression, ``y ~ normal(X beta, sigma)``.

Priors ``beta ~ normal(0, 10)`` and ``sigma ~ normal(0, 10)`` with ``sigma > 0`` (half-Normal).
"""

import pyro
import pyro.distributions as dist
import torch


def model(data):
    X = torch.as_tensor(data["X"], dtype=torch.float64)
    y = torch.as_tensor(data["y"], dtype=torch.float64)
    beta = pyro.sample("beta", dist.Normal(0.0, 10.0).expand([data["D"]]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(10.0))
    with pyro.plate("data", data["N"]):
        pyro.sample("y", dist.Normal((X * beta).sum(-1), sigma), obs=y)
