"""posteriordb ``eight_schools-eight_schools_noncentered``: the non-centred hierarchical model.

Stan: ``theta_trans ~ normal(0, 1); theta = theta_trans * tau + mu; y ~ normal(theta, sigma);
mu ~ normal(0, 5); tau ~ cauchy(0, 5)`` with ``tau > 0`` (so a half-Cauchy). ``theta`` is a
transformed parameter: here a ``pyro.deterministic`` site, compared with the reference draws too.

    svilab posterior --model examples/posteriordb/eight_schools_noncentered.py \
        --data ../shared/posteriordb/eight_schools-eight_schools_noncentered/data.json \
        --reference ../shared/posteriordb/eight_schools-eight_schools_noncentered/reference_draws.json --nuts
"""

import pyro
import pyro.distributions as dist
import torch


def model(data):
    y = torch.as_tensor(data["y"], dtype=torch.float64)
    sigma = torch.as_tensor(data["sigma"], dtype=torch.float64)
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", data["J"]):
        theta_trans = pyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", theta_trans * tau + mu)
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)
