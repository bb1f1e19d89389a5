"""A linear trend on raw calendar years: the geometry of issue #18.

    y_i ~ Normal(alpha + beta * year_i, sigma),  alpha ~ Normal(0, 1000),  beta ~ Normal(0, 10),
    sigma flat on (0, inf);   year = 1950..2010 (years.json; y = -35 + 0.02 year + Normal(0, 0.15) noise)

With the predictor on its raw scale, alpha and beta are correlated -0.99996 with sds 2.0 and 0.001 (a
condition number of 5e10). Run it:

    svilab posterior --model examples/hard/years.py --data examples/hard/years.json --nuts

tests/test_hard_posteriors.py checks the methods against the exact posterior (a multivariate t for
(alpha, beta)).
"""

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints


def model(data):
    x = torch.as_tensor(data["x"], dtype=torch.float64)
    y = torch.as_tensor(data["y"], dtype=torch.float64)
    alpha = pyro.sample("alpha", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1000.0))
    beta = pyro.sample("beta", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 10.0))
    sigma = pyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(alpha + beta * x, sigma), obs=y)
