r"""The Poisson-Gamma model of the exercise notebook.

.. math::

    u \sim \mathrm{Gamma}(a_u, b_u), \qquad v \sim \mathrm{Gamma}(a_v, b_v), \qquad
    x_i \mid u, v \sim \mathrm{Poisson}(u v), \quad i = 1, \dots, N,

with Gamma in the shape/rate parameterisation. The defaults are the notebook's:
``a_u=5, b_u=1, a_v=4, b_v=4`` and ``x = 3,4,3,9,10,3,2,3,3,2``.

The likelihood depends on the data only through the sufficient statistics :math:`N` and
:math:`S = \sum_i x_i`:

.. math::

    \log p(x \mid u, v) = S \log(u v) - N u v - \sum_i \log x_i!,

so :meth:`PoissonGamma.log_joint_positive` (the one place the formula is written) costs O(1) per (u, v) whatever N is.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch

from svilab.validation import as_counts, positive

DEFAULT_DATA: tuple[int, ...] = (3, 4, 3, 9, 10, 3, 2, 3, 3, 2)
DEFAULT_PRIOR_U: tuple[float, float] = (5.0, 1.0)
DEFAULT_PRIOR_V: tuple[float, float] = (4.0, 4.0)


#: the shapes and rates the exact posterior's quadrature handles in float64
PRIOR_RANGE = (1e-8, 1e8)


class PoissonGamma:
    """Poisson-Gamma model: data, priors, a Pyro model and vectorized log densities.

    :param data: non-negative integer counts (1-D); the notebook's data by default.
    :param prior_u: ``(shape, rate)`` of the Gamma prior on u.
    :param prior_v: ``(shape, rate)`` of the Gamma prior on v.
    :raises ValueError: empty, NaN, negative or non-integer counts; non-positive prior parameters.

    The Pyro model is the bound method :meth:`model` (latent sites ``"u"`` and ``"v"``,
    observed site ``"x"`` inside ``pyro.plate("data", N)``)::

        pg = PoissonGamma()
        svi = pyro.infer.SVI(pg.model, guide, optim, pyro.infer.Trace_ELBO())
    """

    def __init__(
        self,
        data: Sequence[float] | torch.Tensor = DEFAULT_DATA,
        prior_u: Sequence[float] = DEFAULT_PRIOR_U,
        prior_v: Sequence[float] = DEFAULT_PRIOR_V,
    ) -> None:
        self.data = as_counts(data, "data")
        if len(prior_u) != 2 or len(prior_v) != 2:
            raise ValueError("prior_u and prior_v must each be (shape, rate)")
        self.a_u = positive(prior_u[0], "prior_u shape")
        self.b_u = positive(prior_u[1], "prior_u rate")
        self.a_v = positive(prior_v[0], "prior_v shape")
        self.b_v = positive(prior_v[1], "prior_v rate")
        for name, value in (("prior_u shape", self.a_u), ("prior_u rate", self.b_u), ("prior_v shape", self.a_v),
                            ("prior_v rate", self.b_v)):
            if not PRIOR_RANGE[0] <= value <= PRIOR_RANGE[1]:
                raise ValueError(f"{name} must be in [{PRIOR_RANGE[0]:g}, {PRIOR_RANGE[1]:g}], got {value:g} (beyond "
                                 "that the prior is a point mass or flat in float64 and the exact posterior's "
                                 "quadrature loses it)")
        self.N = int(self.data.numel())
        self.S = float(self.data.sum())
        #: :math:`\sum_i \log x_i!`
        self.log_factorials = float(torch.lgamma(self.data + 1).sum())
        self._prior_tensors = tuple((torch.tensor(a, dtype=self.data.dtype), torch.tensor(b, dtype=self.data.dtype))
                                    for a, b in ((self.a_u, self.b_u), (self.a_v, self.b_v)))

    # ------------------------------------------------------------------ Pyro model
    def model(self) -> None:
        """The Pyro model. Vectorizes over particles (``max_plate_nesting=1``)."""
        u = pyro.sample("u", dist.Gamma(*self._prior_tensors[0]))
        v = pyro.sample("v", dist.Gamma(*self._prior_tensors[1]))
        with pyro.plate("data", self.N):
            pyro.sample("x", dist.Poisson(u * v), obs=self.data)

    def __call__(self) -> None:
        self.model()

    # ------------------------------------------------------------------ densities
    @functools.cached_property
    def log_normaliser(self) -> float:
        r""":math:`\log\kappa = a_u \log b_u + a_v \log b_v - \log\Gamma(a_u) - \log\Gamma(a_v)
        - \sum_i \log x_i!`, the constant of the log joint (used by the exact posterior, CAVI's
        closed-form ELBO and :meth:`log_joint`)."""
        return (self.a_u * math.log(self.b_u) + self.a_v * math.log(self.b_v) - math.lgamma(self.a_u)
                - math.lgamma(self.a_v) - self.log_factorials)

    def log_joint_positive(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        r"""The log joint for u, v > 0 (not checked), through the sufficient statistics:

        .. math::

            \log p(x, u, v) = \log\kappa + (a_u + S - 1)\log u + (a_v + S - 1)\log v
                - u (b_u + N v) - b_v v.

        The estimators' hot path (their guide families only produce positive z)."""
        return ((self.a_u + self.S - 1) * torch.log(u) + (self.a_v + self.S - 1) * torch.log(v)
                - u * (self.b_u + self.N * v) - self.b_v * v + self.log_normaliser)

    def grad_log_joint(self, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Hand-written :math:`\partial_u \log p = (a_u + S - 1)/u - b_u - N v` and
        :math:`\partial_v \log p = (a_v + S - 1)/v - b_v - N u` (for u, v > 0)."""
        du = (self.a_u + self.S - 1) / u - self.b_u - self.N * v
        dv = (self.a_v + self.S - 1) / v - self.b_v - self.N * u
        return du, dv

    def log_joint(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(x, u, v)` for (u, v) of any (broadcastable) batch shape; ``-inf`` outside
        the positive quadrant (:meth:`log_joint_positive` inside it)."""
        u, v = torch.broadcast_tensors(torch.as_tensor(u), torch.as_tensor(v))
        pos = (u > 0) & (v > 0)
        one = torch.ones_like(u)
        value = self.log_joint_positive(torch.where(pos, u, one), torch.where(pos, v, one))
        return torch.where(pos, value, torch.full_like(value, -math.inf))

    def log_likelihood(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(x \mid u, v) = S \log(uv) - N uv - \sum_i \log x_i!` for any batch
        shape of (u, v) (broadcast); ``-inf`` outside the positive quadrant."""
        u, v = torch.broadcast_tensors(torch.as_tensor(u), torch.as_tensor(v))
        rate = u * v
        pos = rate > 0
        safe = torch.where(pos, rate, torch.ones_like(rate))
        value = self.S * torch.log(safe) - self.N * rate - self.log_factorials
        if self.S == 0:
            value = torch.where(rate >= 0, -self.N * rate - self.log_factorials, value)
            pos = rate >= 0
        return torch.where(pos, value, torch.full_like(value, -math.inf))

    def pointwise_log_likelihood(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(x_i \mid u, v)` with shape ``batch_shape + (N,)`` (for ArviZ/LOO)."""
        rate = (torch.as_tensor(u) * torch.as_tensor(v)).unsqueeze(-1)
        return dist.Poisson(rate, validate_args=False).log_prob(self.data)

    # ------------------------------------------------------------------ helpers
    def config(self) -> dict:
        """The data and both priors, as a JSON-ready dict (what run folders record)."""
        return {"data": [int(x) for x in self.data.tolist()],
                "prior_u": [self.a_u, self.b_u], "prior_v": [self.a_v, self.b_v]}

    def __repr__(self) -> str:
        return (f"PoissonGamma(N={self.N}, S={self.S:g}, prior_u=Gamma({self.a_u:g}, {self.b_u:g}),"
                f" prior_v=Gamma({self.a_v:g}, {self.b_v:g}))")


__all__ = ["PoissonGamma"]
