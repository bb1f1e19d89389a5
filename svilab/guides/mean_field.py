r"""Hand-written mean-field guides for models whose latent variables are positive.

Both guides are Pyro :class:`~pyro.infer.autoguide.AutoGuide` modules that own their parameters
(``PyroParam``, as ``AutoNormal`` does), for any model whose latent sites are global and
positive: the sites are found from one prototype trace of the model (with ``init_loc_fn``, which
never samples a site), and each gets its own independent factor

.. math::

    q(z) = \prod_{s \in \text{latent sites}} q_s(z_s).

* :class:`MeanFieldPositiveNormal`: :math:`q_s = \mathcal N(\mu_s, \sigma_s^2)` truncated to
  :math:`(0, \infty)` (:class:`~svilab.guides.truncated_normal.PositiveNormal`), the notebook's
  guide with its normaliser. Parameters ``guide.loc.<site>`` (real) and ``guide.scale.<site>``
  (positive constraint).
* :class:`MeanFieldGamma`: :math:`q_s = \mathrm{Gamma}(\alpha_s, \alpha_s / m_s)` (shape
  :math:`\alpha_s`, mean :math:`m_s`), reparameterized through torch's implicit-reparameterization
  Gamma sampler. Parameters ``guide.concentration.<site>`` and ``guide.mean.<site>``
  (positive). Parameterizing by the mean instead of the rate decouples the two directions (shape
  and rate are strongly correlated along the ELBO ridge of constant mean), which makes SVI converge
  several times faster. For the Poisson-Gamma
  model this is the CAVI family, so its optimum is the CAVI solution.

Shapes: a latent site with shape ``S`` (outside any plate) gets parameters of shape ``S`` and a
factor with ``event_shape == S``. Latent sites inside a plate (local latent variables) and sites
whose support is not the positive half-line are refused with a clear error: use an autoguide.
The guides vectorize over particles (``Trace_ELBO(vectorize_particles=True)``).
:meth:`factors` returns the current factor of every site (what an exact ELBO needs: the closed
form for Gamma factors, quadrature for truncated Normals), so nothing reads parameter-store names.
The initial location is the prior mean (``init_loc_fn``, falling back to the centre of the
support for priors without a mean).
"""

from __future__ import annotations

from operator import attrgetter

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoGuide
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.infer.autoguide.utils import deep_setattr
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

from svilab.guides.truncated_normal import PositiveNormal
from svilab.inference.init import make_init


def _check_positive_global(name: str, site: dict) -> None:
    if site["cond_indep_stack"]:
        raise ValueError(f"latent site {name!r} is inside a plate: the mean-field guides handle "
                         "global latent variables only; use an autoguide (e.g. 'lognormal')")
    support = site["fn"].support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    half_line = isinstance(support, constraints.greater_than | constraints.greater_than_eq)
    if not half_line or float(support.lower_bound) != 0.0:
        raise ValueError(f"latent site {name!r} has support {site['fn'].support}, not (0, inf): the "
                         "mean-field positive guides do not apply; use an autoguide")


class _MeanField(AutoGuide):
    """Common machinery: one factor per latent site, parameters created from the prototype trace."""

    def __init__(self, model, *, init_loc_fn=None, create_plates=None) -> None:
        self.init_loc_fn = init_loc_fn if init_loc_fn is not None else make_init("mean")
        super().__init__(InitMessenger(self.init_loc_fn)(model), create_plates=create_plates)

    def _setup_prototype(self, *args, **kwargs) -> None:
        super()._setup_prototype(*args, **kwargs)
        self._inits: dict[str, torch.Tensor] = {}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            _check_positive_global(name, site)
            self._inits[name] = site["value"].detach()
        if not self._inits:
            raise ValueError("the model has no latent sample sites")
        for field_name, (make, constraint) in self._fields().items():
            setattr(self, field_name, PyroModule())
            for name, init in self._inits.items():
                deep_setattr(getattr(self, field_name), name, PyroParam(make(init), constraint, init.dim()))

    def _fields(self) -> dict:
        """``{parameter name: (init value from the site's initial value, constraint)}``."""
        raise NotImplementedError

    def _factor(self, name: str) -> dist.Distribution:
        raise NotImplementedError

    def _param(self, field_name: str, site: str) -> torch.Tensor:
        return attrgetter(site)(getattr(self, field_name))

    def factors(self, *args, **kwargs) -> dict[str, dist.Distribution]:
        """The current factor of each latent site (``event_shape`` = the site's shape)."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        out = {}
        for name, init in self._inits.items():
            d = self._factor(name)
            out[name] = d.to_event(init.dim()) if init.dim() else d
        return out

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        return {name: pyro.sample(name, d) for name, d in self.factors(*args, **kwargs).items()}

    @torch.no_grad()
    def median(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        return {name: d.mean for name, d in self.factors(*args, **kwargs).items()}


class MeanFieldPositiveNormal(_MeanField):
    """Mean-field Normal guide, each factor truncated to (0, inf) (the notebook's guide, corrected).

    :param model: the Pyro model (its latent sites must be positive and global).
    :param init_scale: initial sigma as a fraction of the initial location (the prior mean).
    """

    def __init__(self, model, init_scale: float = 0.1, **kwargs) -> None:
        self.init_scale = init_scale
        super().__init__(model, **kwargs)

    def _fields(self):
        return {"loc": (lambda v: v.clone(), constraints.real),
                "scale": (lambda v: self.init_scale * v.clone(), constraints.positive)}

    def _factor(self, name):
        return PositiveNormal(self._param("loc", name), self._param("scale", name))


class MeanFieldGamma(_MeanField):
    """Mean-field Gamma guide, parameterized by shape and mean; reparameterized by torch's Gamma ``rsample``.

    :param model: the Pyro model (its latent sites must be positive and global).
    :param init_concentration: initial shape; the initial mean is the prior mean.
    """

    def __init__(self, model, init_concentration: float = 20.0, **kwargs) -> None:
        self.init_concentration = init_concentration
        super().__init__(model, **kwargs)

    def _fields(self):
        return {"concentration": (lambda v: torch.full_like(v, self.init_concentration), constraints.positive),
                "mean": (lambda v: v.clone(), constraints.positive)}

    def _factor(self, name):
        concentration = self._param("concentration", name)
        return dist.Gamma(concentration, concentration / self._param("mean", name))


__all__ = ["MeanFieldGamma", "MeanFieldPositiveNormal"]
