"""posteriordb ``earnings-logearn_height``: log earnings on height, flat priors.

Stan: ``log_earn ~ normal(beta[1] + beta[2] * height, sigma)`` and no prior statements, so
``beta`` and ``sigma > 0`` have flat (improper) priors: ``dist.ImproperUniform`` here. Height is
on its raw scale (about 66 inches), so beta[1] and beta[2] are correlated almost -1.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints


def model(data):
    log_earn = torch.log(torch.as_tensor(data["earn"], dtype=torch.float64))
    height = torch.as_tensor(data["height"], dtype=torch.float64)
    beta = pyro.sample("beta", dist.ImproperUniform(constraints.real, (), (2,)))
    sigma = pyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    with pyro.plate("data", data["N"]):
        pyro.sample("log_earn", dist.Normal(beta[..., 0] + beta[..., 1] * height, sigma),
                    obs=log_earn)
