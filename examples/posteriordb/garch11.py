"""posteriordb ``garch-garch11``: GARCH(1, 1) volatility, flat priors, a bound that depends on a parameter.

Stan: ``mu`` real, ``alpha0 > 0``, ``0 < alpha1 < 1``, ``0 < beta1 < 1 - alpha1``, no prior statements
(flat on that region), ``sigma[1] = sigma1``,
``sigma[t]^2 = alpha0 + alpha1 (y[t-1] - mu)^2 + beta1 sigma[t-1]^2``, ``y ~ normal(mu, sigma)``.

Pyro's transforms to a site's support are fixed per site, so the dependent bound is written the
way Stan implements it: ``beta1 = (1 - alpha1) * beta1_unit`` with ``beta1_unit`` in (0, 1), and the
Jacobian ``log(1 - alpha1)`` as a factor, which makes the density flat in (alpha1, beta1) as in Stan.
``beta1`` is a deterministic site (compared with the reference draws).

The variance recursion is a linear recurrence, solved in closed form and vectorized:
``log sigma[t]^2 = t log beta1 + logcumsumexp_s(log c_s - s log beta1)`` with ``c_0 = sigma1^2`` and
``c_s = alpha0 + alpha1 (y[s-1] - mu)^2`` (stable for any beta1 in (0, 1)).
"""

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints


def model(data):
    y = torch.as_tensor(data["y"], dtype=torch.float64)
    T, sigma1 = data["T"], float(data["sigma1"])
    mu = pyro.sample("mu", dist.ImproperUniform(constraints.real, (), ()))
    alpha0 = pyro.sample("alpha0", dist.ImproperUniform(constraints.positive, (), ()))
    alpha1 = pyro.sample("alpha1", dist.ImproperUniform(constraints.unit_interval, (), ()))
    beta1_unit = pyro.sample("beta1_unit", dist.ImproperUniform(constraints.unit_interval, (), ()))
    pyro.factor("beta1_jacobian", torch.log1p(-alpha1))
    beta1 = pyro.deterministic("beta1", (1 - alpha1) * beta1_unit)
    log_c = torch.log(alpha0 + alpha1 * (y[:-1] - mu) ** 2)                       # s = 1 .. T-1
    log_c = torch.cat([torch.full_like(log_c[..., :1], 2 * math.log(sigma1)), log_c], dim=-1)
    s = torch.arange(T, dtype=y.dtype)
    log_b = torch.log(beta1)
    log_var = s * log_b + torch.logcumsumexp(log_c - s * log_b, dim=-1)
    with pyro.plate("time", T):
        pyro.sample("y", dist.Normal(mu, torch.exp(0.5 * log_var)), obs=y)
