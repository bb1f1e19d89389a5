"""posteriordb ``low_dim_gauss_mix-low_dim_gauss_mix``: a two-component Normal mixture.

Stan: ``ordered[2] mu; array[2] real<lower=0> sigma; real<lower=0, upper=1> theta;``
``sigma ~ normal(0, 2); mu ~ normal(0, 2); theta ~ beta(5, 5);``
``target += log_mix(theta, normal_lpdf(y[n] | mu[1], sigma[1]), normal_lpdf(y[n] | mu[2], sigma[2]))``.

The ordering constraint is the support of ``mu`` (``constraints.ordered_vector``, the same
transform as Stan's) with the Normal(0, 2) prior added as a factor; the likelihood is a
``MixtureSameFamily`` (theta weights component 1, as in ``log_mix``).
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints


def model(data):
    y = torch.as_tensor(data["y"], dtype=torch.float64)
    mu = pyro.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
    pyro.factor("mu_prior", dist.Normal(0.0, 2.0).log_prob(mu).sum(-1))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
    theta = pyro.sample("theta", dist.Beta(5.0, 5.0))
    weights = torch.stack([theta, 1 - theta], dim=-1)
    with pyro.plate("data", data["N"]):
        mixture = dist.MixtureSameFamily(dist.Categorical(probs=weights),
                                         dist.Normal(mu, sigma))
        pyro.sample("y", mixture, obs=y)
