"""posteriordb ``mesquite-logmesquite``: log weight on six log-scale predictors and a group, flat priors.

Stan: ``log_weight ~ normal(beta[1] + beta[2] log_diam1 + ... + beta[7] group, sigma)`` with no
prior statements (flat ``beta``, flat ``sigma > 0``).
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

PREDICTORS = ("diam1", "diam2", "canopy_height", "total_height", "density")


def model(data):
    def col(name):
        return torch.as_tensor(data[name], dtype=torch.float64)

    X = torch.stack([torch.ones(data["N"], dtype=torch.float64), *(torch.log(col(p)) for p in PREDICTORS),
                     col("group")], dim=-1)
    beta = pyro.sample("beta", dist.ImproperUniform(constraints.real, (), (7,)))
    sigma = pyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    with pyro.plate("data", data["N"]):
        pyro.sample("log_weight", dist.Normal((X * beta).sum(-1), sigma),
                    obs=torch.log(col("weight")))
