"""The eight schools in the centred parameterisation: a funnel (issue #18's second hard case).

    y_j ~ Normal(theta_j, sigma_j),  theta_j ~ Normal(mu, tau),  mu ~ Normal(0, 5),  tau ~ HalfCauchy(5)

(posteriordb's ``eight_schools_centered``; the shared database has the non-centred form.) Where tau is small
the thetas are squeezed together: NUTS diverges in the neck and mean-field guides miss it. The exact
posterior is a one-dimensional quadrature over tau (examples/hard/exact.py). Run it:

    svilab posterior --model examples/hard/eight_schools_centered.py \
        --data examples/hard/eight_schools_centered.json --nuts
"""

import pyro
import pyro.distributions as dist
import torch


def model(data):
    y = torch.as_tensor(data["y"], dtype=torch.float64)
    sigma = torch.as_tensor(data["sigma"], dtype=torch.float64)
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(torch.tensor(5.0, dtype=torch.float64)))
    with pyro.plate("schools", len(y)):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)
