"""A regression with collinear predictors: the geometry of issue #18's third hard case.

    y_i ~ Normal(x_i . beta, sigma),  beta ~ Normal(0, 10^2 I_8),  sigma ~ HalfNormal(2)

The eight columns of X (collinear.json, 100 rows) are one common factor plus 1% independent noise each, so the
data fix the sum of the coefficients to about 0.04 and leave their differences to the prior (sds about 7): a
condition number of about 4e4 in the coefficients. The exact posterior is a one-dimensional quadrature over
sigma (examples/hard/exact.py). Run it:

    svilab posterior --model examples/hard/collinear.py --data examples/hard/collinear.json --nuts
"""

import pyro
import pyro.distributions as dist
import torch


def model(data):
    X = torch.as_tensor(data["X"], dtype=torch.float64)
    y = torch.as_tensor(data["y"], dtype=torch.float64)
    beta = pyro.sample("beta", dist.Normal(torch.zeros(X.shape[1], dtype=torch.float64), 10.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.tensor(2.0, dtype=torch.float64)))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal((X * beta).sum(-1), sigma), obs=y)
