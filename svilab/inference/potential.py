r"""A Pyro model's log joint on its unconstrained space, vectorized over a batch of points.

Every latent site :math:`z_s` with support :math:`\mathcal S_s` is written as
:math:`z_s = T_s(\zeta_s)` with Pyro's bijection ``biject_to(support)`` (``exp`` for positive
sites, a sigmoid for intervals, Stan's transform for ordered vectors ...), and the unconstrained
coordinates of all sites are stacked into :math:`\zeta \in \mathbb R^D`. The density there is

.. math::

    \log \tilde p(x, \zeta) = \log p\big(x, T(\zeta)\big) + \sum_s \log\big|\det J_{T_s}(\zeta_s)\big|,

the negative of Pyro's potential energy (``pyro.infer.mcmc.util.initialize_model``), but
evaluated for a whole batch of points at once: the model runs once, conditioned on all points,
inside a particle plate at ``dim = -(max_plate_nesting + 1)``, and each site's log density is
summed over everything but the particle dim. :func:`unconstrained_target` returns it as an
estimator :class:`~svilab.inference.estimators.base.Target` (latent-first shape ``(D, *B)``,
gradient by autograd), so every hand-written estimator works on any model.

Coordinate names follow Stan's: ``beta[2]`` for the second coordinate of site ``beta``; for a
constrained site they are the unconstrained coordinates (``sigma`` means :math:`\log\sigma`).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import biject_to

from svilab.inference.draws import conditioned_trace
from svilab.inference.estimators.base import Target
from svilab.inference.sites import ModelSites, model_sites

#: bound on (batch size x observed values) per model evaluation, to keep memory bounded
MAX_CELLS = 2**23


class UnconstrainedTarget(Target):
    """:class:`Target` over the stacked unconstrained coordinates of a Pyro model's latent sites."""

    def __init__(self, model, sites: ModelSites, *args, **kwargs) -> None:
        self.model, self.sites, self.args, self.kwargs = model, sites, args, kwargs
        self.transforms, self.shapes, self.sizes = {}, {}, {}
        names = []
        for name, ushape in sites.unconstrained_shapes.items():
            self.transforms[name], self.shapes[name] = biject_to(sites.latent[name].support), ushape
            self.sizes[name] = math.prod(ushape)
            names += [name] if not ushape else [f"{name}[{i + 1}]" for i in range(self.sizes[name])]
        super().__init__(self._log_joint, None, dim=sum(self.sizes.values()), support="real")
        #: coordinate names, Stan's style (``beta[2]``)
        self.names = tuple(names)
        cells = max(1, sites.num_observed)
        #: the largest batch evaluated at once (estimate() chunks by it)
        self.max_batch = max(256, MAX_CELLS // cells)

    def constrained(self, zeta: torch.Tensor) -> dict[str, torch.Tensor]:
        """The site values of points ``zeta`` of shape ``(n, D)``: ``{site: (n, *site shape)}``."""
        n, values, start = zeta.shape[0], {}, 0
        for name, t in self.transforms.items():
            k = self.sizes[name]
            values[name] = t(zeta[:, start:start + k].reshape((n,) + self.shapes[name]))
            start += k
        return values

    def _log_joint(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[1:]
        zeta = z.reshape(z.shape[0], -1).T                                     # (n, D)
        n = zeta.shape[0]
        total = torch.zeros(n, dtype=z.dtype)
        nesting = self.sites.max_plate_nesting
        values, start = {}, 0
        for name, t in self.transforms.items():
            k = self.sizes[name]
            u = zeta[:, start:start + k].reshape((n,) + self.shapes[name])
            values[name] = t(u)
            total = total + t.log_abs_det_jacobian(u, values[name]).reshape(n, -1).sum(-1)
            start += k
        trace = conditioned_trace(self.model, self.sites, values, n, *self.args, **self.kwargs)
        for site in trace.nodes.values():
            if site["type"] != "sample":
                continue
            lp = site["fn"].log_prob(site["value"])
            if site.get("mask") is not None:
                lp = lp * site["mask"]
            if lp.dim() < nesting + 1:  # no particle dim: the same for every point
                total = total + lp.sum()
            else:
                lp = lp.movedim(-(nesting + 1), 0)
                total = total + lp.reshape(lp.shape[0], -1).sum(-1)
        return total.reshape(batch)


def unconstrained_target(model, *args, **kwargs) -> UnconstrainedTarget:
    """The :class:`UnconstrainedTarget` of ``model(*args, **kwargs)`` (sites from one sample-free trace)."""
    return UnconstrainedTarget(model, model_sites(model, *args, **kwargs), *args, **kwargs)


__all__ = ["UnconstrainedTarget", "unconstrained_target"]
