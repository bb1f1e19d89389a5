"""posteriordb ``arK-arK``: an AR(K) model, ``y[t] ~ normal(alpha + sum_k beta[k] y[t-k], sigma)``.

Priors ``alpha, beta ~ normal(0, 10)``, ``sigma ~ cauchy(0, 2.5)`` with ``sigma > 0`` (half-Cauchy).
The lagged values form a fixed (T - K) x K design matrix, so the likelihood is one vectorized
Normal over t = K+1..T instead of Stan's loop.
"""

import pyro
import pyro.distributions as dist
import torch


def model(data):
    K, T = data["K"], data["T"]
    y = torch.as_tensor(data["y"], dtype=torch.float64)
    lags = torch.stack([y[K - k:T - k] for k in range(1, K + 1)], dim=-1)  # lags[t, k-1] = y[t + K - k]
    alpha = pyro.sample("alpha", dist.Normal(0.0, 10.0))
    beta = pyro.sample("beta", dist.Normal(0.0, 10.0).expand([K]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfCauchy(2.5))
    mu = alpha + (lags * beta).sum(-1)
    with pyro.plate("time", T - K):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y[K:])
