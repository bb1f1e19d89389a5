r"""The low-rank-plus-diagonal Gaussian guide with its rank sized from the latent dimension.

Pyro's :class:`~pyro.infer.autoguide.AutoLowRankMultivariateNormal` with ``rank=None`` takes
:math:`r = \mathrm{round}(\sqrt D)`. Its density needs the :math:`r \times r` capacitance matrix
:math:`I + W^\top \Psi^{-1} W`, so a step costs :math:`O(D r^2)` time: with :math:`r = \sqrt D` that is
quadratic in D (6.3 s per step at :math:`D = 10^5` in ``benchmarks/bench_scale.py``). svilab keeps Pyro's
rank up to :math:`D = 1024` and caps it at 32 above (:func:`svilab.guides.sizing.lowrank_rank`), so time
and memory (:math:`D(r + 2)` parameters) stay linear in D. An explicit ``rank`` is used as given.
"""

from __future__ import annotations

import torch
from pyro.infer.autoguide import AutoContinuous, AutoLowRankMultivariateNormal
from pyro.nn import PyroParam

from svilab.guides.sizing import lowrank_rank


class AutoLowRank(AutoLowRankMultivariateNormal):
    """:class:`~pyro.infer.autoguide.AutoLowRankMultivariateNormal` whose default rank is
    :func:`~svilab.guides.sizing.lowrank_rank` of the latent dimension (module docstring)."""

    def _setup_prototype(self, *args, **kwargs):
        # Pyro 1.9's AutoLowRankMultivariateNormal._setup_prototype with the rank sized before the (D, r)
        # factor is allocated (sizing it afterwards would allocate Pyro's D x sqrt(D) first)
        AutoContinuous._setup_prototype(self, *args, **kwargs)
        self.loc = torch.nn.Parameter(self._init_loc())
        if self.rank is None:
            self.rank = lowrank_rank(self.latent_dim)
        self.scale = PyroParam(self.loc.new_full((self.latent_dim,), 0.5**0.5 * self._init_scale),
                               constraint=self.scale_constraint)
        self.cov_factor = torch.nn.Parameter(
            self.loc.new_empty(self.latent_dim, self.rank).normal_(0, 1 / self.rank**0.5))


__all__ = ["AutoLowRank"]
