r"""The skew geometric Jensen-Shannon objective as a Pyro ELBO: :class:`GeometricJSD_ELBO`.

Like :class:`pyro.infer.TraceMeanField_ELBO`, with the divergence
:func:`svilab.inference.divergences.geometric_js` in place of the KL term of each latent site:

.. math::

    \mathcal L_{\mathrm{GJS}}(x) = \mathbb E_{q(z\mid x)}[\log p(x \mid z)]
        - \beta \sum_{\text{latent sites}} \mathrm{GJS}^{(*)}_\alpha\big(q(z \mid x) \,\|\, p(z)\big),

and the loss is :math:`-\mathcal L_{\mathrm{GJS}}` (the expectation by reparameterized Monte Carlo,
``num_particles`` samples, vectorized when asked). With ``alpha = 0`` (``dual=False``) and
``beta = 1`` it is the ELBO with analytic KL, which the tests check against ``TraceMeanField_ELBO``.
It is *not* a bound on :math:`\log p(x)` for other alpha: compare models trained with it by the
true ELBO and the importance-weighted log-likelihood (:mod:`svilab.inference.vae_eval`).

Every latent site of the guide and of the model must be a (diagonal) Normal: anything else is a
ValueError naming the site. ``plain pyro.infer.SVI`` accepts it; :class:`JitGeometricJSD_ELBO`
compiles it with Pyro's JIT (``jit=True`` in :func:`make_gjs_loss`).
"""

from __future__ import annotations

import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import TraceMeanField_ELBO
from pyro.infer.util import torch_item

from svilab.inference.divergences import check_alpha, geometric_js
from svilab.inference.jit_elbo import JitTraceMeanField_ELBO
from svilab.validation import finite


class GeometricJSD_ELBO(TraceMeanField_ELBO):
    """Mean-field objective with the skew geometric JS divergence (see module docstring).

    :param alpha: skew in [0, 1].
    :param dual: use the dual form GJS*.
    :param beta: weight of the divergence term.
    :param kwargs: passed to :class:`pyro.infer.ELBO` (``num_particles``, ``vectorize_particles``, ...).
    """

    def __init__(self, alpha: float = 0.5, dual: bool = False, beta: float = 1.0, **kwargs) -> None:
        self.alpha = check_alpha(alpha)
        self.dual = bool(dual)
        self.beta = finite(beta, "beta")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        super().__init__(**kwargs)

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        objective = 0.0
        for name, model_site in model_trace.nodes.items():
            if model_site["type"] != "sample":
                continue
            if model_site["is_observed"]:
                objective = objective + model_site["log_prob_sum"]
                continue
            guide_site = guide_trace.nodes[name]
            try:
                div = geometric_js(guide_site["fn"], model_site["fn"], self.alpha, self.dual)
            except ValueError as exc:
                raise ValueError(f"latent site {name!r}: {exc}") from None
            div = scale_and_mask(div, scale=guide_site["scale"], mask=guide_site["mask"])
            objective = objective - self.beta * div.sum()
        for name, guide_site in guide_trace.nodes.items():
            if guide_site["type"] == "sample" and name not in model_trace.nodes:
                raise ValueError(f"guide site {name!r} has no model counterpart (auxiliary sites are not supported)")
        loss = -(objective.detach() if torch._C._get_tracing_state() else torch_item(objective))
        return loss, -objective


class JitGeometricJSD_ELBO(GeometricJSD_ELBO, JitTraceMeanField_ELBO):
    """:class:`GeometricJSD_ELBO` compiled with Pyro's JIT (static model structure required)."""

#: the names users reach for (Pyro's style: ``Trace_ELBO``, ``RenyiELBO``)
GJS_ELBO = GeometricJSD_ELBO
JitGJS_ELBO = JitGeometricJSD_ELBO


__all__ = ["GJS_ELBO", "GeometricJSD_ELBO", "JitGJS_ELBO", "JitGeometricJSD_ELBO"]
