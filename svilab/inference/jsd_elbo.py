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

Each latent site needs its own guide distribution, as :class:`~pyro.infer.TraceMeanField_ELBO`'s KL
terms do: the guide's site itself, or for a site that the guide draws through an auxiliary
variable (``AutoNormal``: a Normal in the unconstrained space pushed through the support's
bijection to a ``Delta`` site) the auxiliary distribution against the prior carried to the same
unconstrained space (the divergence is invariant under a bijection applied to both). The divergence
is in closed form where both sides are (diagonal) Normal (a real-valued latent with a Normal prior
under ``AutoNormal`` included), and by Monte Carlo with ``mc_samples`` draws of each side otherwise
(:func:`~svilab.inference.divergences.geometric_js_mc`). A guide that draws several sites jointly
(``AutoMultivariateNormal``, ``AutoLowRankMultivariateNormal``, ``AutoDiagonalNormal``, a flow: one
auxiliary vector :math:`\zeta` for all its sites) gets one divergence for the joint: its auxiliary
distribution against the prior of those sites carried to :math:`\zeta` (:class:`_JointPrior`), by Monte
Carlo; for independent sites it is the sum of the per-site divergences (the skew geometric mean of
product densities is the product of theirs), which the tests check. An auxiliary site with no model site
to pair it with, or two joint auxiliary vectors, is a ValueError that says so.
Plain ``pyro.infer.SVI`` accepts it; :class:`JitGeometricJSD_ELBO` compiles it with Pyro's JIT.

**Learned skew** (``learn_alpha=True``; the paper's tGJS and, with ``dual``, tdGJS): alpha is the Pyro
parameter ``alpha_name`` (default ``"gjs_alpha"``), created at the start value ``alpha`` with the
constraint ``unit_interval`` (so it stays in (0, 1)), and trained with the networks by whatever
optimises the model's and guide's parameters (``pyro.infer.SVI`` collects it like any ``pyro.param``;
:func:`svilab.train_vae` adds it to its optimizer and records it per epoch). The objective as a function
of (alpha, q) is the same as with a fixed alpha: in the official code (``jacobdeasy/geometric-js``,
``vae/models/losses.py``, ``GeometricJSLossTrainableAlpha`` with ``invert_alpha=True``) the loss per
batch is ``rec_loss + beta * gjs`` with, for :math:`q = \mathcal N(\mu, \mathrm{diag}\,\sigma^2)` and
:math:`p = \mathcal N(0, I)`,

.. math::

    \sigma_\alpha^2 = \big(\alpha/\sigma^2 + (1-\alpha)\big)^{-1},\quad
    \mu_\alpha = \sigma_\alpha^2\,\alpha\,\mu/\sigma^2,\quad
    \mathrm{gjs} = (1-\alpha)\,\mathrm{KL}(q\|G) + \alpha\,\mathrm{KL}(p\|G)
    \;(\text{dual: } (1-\alpha)\,\mathrm{KL}(G\|q) + \alpha\,\mathrm{KL}(G\|p)),

summed over the latent dimensions and averaged over the batch, which is this module's divergence per
image (``tests/test_gjs.py`` checks value and gradient against that formula to 1e-12). The one
difference is the parameterisation: the official code trains alpha itself with its own Adam at the
networks' learning rate and clamps it to [0, 1] after each step; here Adam steps on
:math:`\mathrm{logit}(\alpha)` (Pyro's constraint), so alpha never sits on a boundary, where one of the
two KL terms would vanish with its gradient.
"""

from __future__ import annotations

import pyro
import torch
from pyro.distributions import constraints
from pyro.distributions.util import scale_and_mask
from pyro.infer import TraceMeanField_ELBO
from pyro.infer.util import torch_item
from torch.distributions import TransformedDistribution, biject_to
from torch.distributions.transforms import ComposeTransform, IndependentTransform

from svilab.inference.divergences import check_alpha, geometric_js, unwrap_independent
from svilab.inference.jit_elbo import JitTraceMeanField_ELBO
from svilab.validation import finite


class GeometricJSD_ELBO(TraceMeanField_ELBO):
    """Mean-field objective with the skew geometric JS divergence (see module docstring).

    :param alpha: skew in [0, 1].
    :param dual: use the dual form GJS*.
    :param beta: weight of the divergence term.
    :param mc_samples: draws of each side for a site without a closed form (>= 2).
    :param learn_alpha: train alpha, from the start value ``alpha`` (module docstring); the start must
        be inside (0, 1).
    :param alpha_name: the name of the Pyro parameter that holds a learned alpha.
    :param kwargs: passed to :class:`pyro.infer.ELBO` (``num_particles``, ``vectorize_particles``, ...).

    >>> import pyro, pyro.distributions as dist, torch, svilab
    >>> from pyro.infer.autoguide import AutoNormal
    >>> def model(x):
    ...     rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))        # positive: Monte Carlo divergence
    ...     loc = pyro.sample("loc", dist.Normal(0.0, 5.0))         # real, Normal prior: closed form
    ...     with pyro.plate("data", len(x)):
    ...         pyro.sample("x", dist.Normal(loc, 1.0 / rate.sqrt()), obs=x)
    >>> pyro.clear_param_store(); pyro.set_rng_seed(0)
    >>> guide = AutoNormal(model)
    >>> x = torch.tensor([0.5, 1.5, 1.0, 2.0])
    >>> svi = svilab.SVI(model, guide, svilab.ClippedAdam(lr=0.05), svilab.GJS_ELBO(alpha=0.5))
    >>> result = svi.run(300, x)
    >>> bool(result.final_loss < result.history[0])
    True
    """

    def __init__(self, alpha: float = 0.5, dual: bool = False, beta: float = 1.0, mc_samples: int = 64,
                 learn_alpha: bool = False, alpha_name: str = "gjs_alpha", **kwargs) -> None:
        self.mc_samples = int(mc_samples)
        if self.mc_samples < 2:
            raise ValueError(f"mc_samples must be >= 2, got {mc_samples}")
        self.alpha = check_alpha(alpha)
        self.learn_alpha = bool(learn_alpha)
        self.alpha_name = str(alpha_name)
        if self.learn_alpha and not 0.0 < self.alpha < 1.0:
            raise ValueError(f"a learned alpha starts inside (0, 1), got {alpha}")
        self.dual = bool(dual)
        self.beta = finite(beta, "beta")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        super().__init__(**kwargs)

    def skew(self, like: torch.Tensor | None = None) -> float | torch.Tensor:
        """The skew: the fixed ``alpha``, or the learned parameter (created at its start value, with the
        dtype and device of ``like``, on first use)."""
        if not self.learn_alpha:
            return self.alpha
        like = torch.zeros(()) if like is None else like
        return pyro.param(self.alpha_name, lambda: torch.tensor(self.alpha, dtype=like.dtype, device=like.device),
                          constraint=constraints.unit_interval)

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        objective = 0.0
        alpha = None
        paired: set[str] = set()
        joint: list[tuple[str, dict]] = []          # sites an AutoContinuous guide draws jointly
        for name, model_site in model_trace.nodes.items():
            if model_site["type"] != "sample":
                continue
            if model_site["is_observed"]:
                objective = objective + model_site["log_prob_sum"]
                continue
            if alpha is None:
                alpha = self.skew(model_site["value"] if model_site["value"].is_floating_point() else None)
            pair = _site_pair(name, model_site, guide_trace)
            if pair is None:
                joint.append((name, model_site))
                continue
            q, p, used = pair
            paired.update(used)
            try:
                div = geometric_js(q, p, alpha, self.dual, num_samples=self.mc_samples)
            except ValueError as exc:
                raise ValueError(f"latent site {name!r}: {exc}") from None
            div = scale_and_mask(div, scale=guide_trace.nodes[name]["scale"], mask=guide_trace.nodes[name]["mask"])
            objective = objective - self.beta * div.sum()
        if joint:
            aux = _joint_auxiliary(joint, guide_trace, paired)
            prior = _JointPrior([site["fn"] for _, site in joint], [guide_trace.nodes[n]["value"] for n, _ in joint],
                                aux["fn"])
            div = geometric_js(aux["fn"], prior, alpha, self.dual, num_samples=self.mc_samples)
            objective = objective - self.beta * scale_and_mask(div, scale=aux["scale"], mask=aux["mask"]).sum()
            paired.update([aux["name"], *(n for n, _ in joint)])
        for name, guide_site in guide_trace.nodes.items():
            if guide_site["type"] == "sample" and name not in model_trace.nodes and name not in paired:
                raise ValueError(f"guide site {name!r} has no model site to pair it with: the GJS objective needs "
                                 "a guide distribution per latent site, or one auxiliary vector for the sites an "
                                 "autoguide draws jointly")
        loss = -(objective.detach() if torch._C._get_tracing_state() else torch_item(objective))
        return loss, -objective


class _JointPrior:
    r"""The model's prior of the sites an ``AutoContinuous`` guide draws jointly, carried to the guide's
    unconstrained latent vector :math:`\zeta` (the sites' unconstrained values, flattened per particle and
    concatenated in the guide's order, as Pyro packs them):
    :math:`\log p(\zeta) = \sum_k \log p_k(T_k(\zeta_k)) + \log|\det J_{T_k}(\zeta_k)|`, with
    :math:`T_k` = ``biject_to`` of site k's support; draws are each prior's draws pushed through
    :math:`T_k^{-1}` and packed. Shapes: ``batch_shape`` the auxiliary site's (its leading dims the
    vectorized particles), ``event_shape`` ``(D,)``."""

    has_rsample = False

    def __init__(self, priors: list, values: list[torch.Tensor], aux_fn) -> None:
        self.batch_shape, self.event_shape = aux_fn.batch_shape, aux_fn.event_shape
        self.particles = self.batch_shape.numel()
        self.parts = []
        for fn, value in zip(priors, values, strict=True):
            t = biject_to(fn.support)
            shape = t.inv(value).shape
            self.parts.append((fn, t, shape, shape.numel() // self.particles))
        dim = sum(n for *_, n in self.parts)
        if dim != self.event_shape[-1]:
            raise ValueError(f"the guide's joint latent vector has {self.event_shape[-1]} coordinates but the model's "
                             f"sites it draws have {dim} unconstrained values")

    def sample(self, sample_shape=torch.Size()):
        shape = torch.Size(sample_shape)
        with torch.no_grad():
            parts = [t.inv(fn.sample(shape)).reshape(shape + (self.particles, n)) for fn, t, _, n in self.parts]
        return torch.cat(parts, -1).reshape(shape + self.batch_shape + self.event_shape)

    def log_prob(self, zeta: torch.Tensor) -> torch.Tensor:
        lead = zeta.shape[:zeta.dim() - len(self.batch_shape) - 1]
        flat = zeta.reshape(lead + (self.particles, -1))
        total, at = 0.0, 0
        for fn, t, shape, n in self.parts:
            u = flat[..., at:at + n].reshape(lead + shape)
            at += n
            x = t(u)
            terms = fn.log_prob(x).reshape(lead + (self.particles, -1)).sum(-1)
            terms = terms + t.log_abs_det_jacobian(u, x).reshape(lead + (self.particles, -1)).sum(-1)
            total = total + terms
        return total.reshape(lead + self.batch_shape)


def _joint_auxiliary(joint: list, guide_trace, paired: set) -> dict:
    """The one auxiliary guide site (``AutoContinuous``'s ``_<name>_latent``) that draws the sites in ``joint``."""
    aux = [s for n, s in guide_trace.nodes.items() if s["type"] == "sample" and s["infer"].get("is_auxiliary")
           and n not in paired]
    if len(aux) != 1:
        names = ", ".join(n for n, _ in joint)
        raise ValueError(f"latent site(s) {names}: the guide gives them no distribution of their own (Delta sites) "
                         f"and {'no' if not aux else 'more than one'} auxiliary vector to draw them jointly: the GJS "
                         "objective needs a guide distribution per latent site (AutoNormal, a hand-written guide) or "
                         "one AutoContinuous guide (AutoMultivariateNormal, AutoLowRankMultivariateNormal, a flow)")
    return aux[0]


def _is_identity(t) -> bool:
    while isinstance(t, IndependentTransform):
        t = t.base_transform
    return isinstance(t, ComposeTransform) and not t.parts


def _site_pair(name: str, model_site: dict, guide_trace) -> tuple | None:
    """The guide's and the prior's distribution of latent site ``name`` on one space, and the guide
    sites they use (module docstring); None for a Delta site with no auxiliary of its own (an
    ``AutoContinuous`` guide draws it jointly with the others)."""
    guide_site = guide_trace.nodes.get(name)
    if guide_site is None or guide_site["type"] != "sample":
        raise ValueError(f"latent site {name!r} of the model is not in the guide")
    if type(unwrap_independent(guide_site["fn"])[0]).__name__ != "Delta":
        return guide_site["fn"], model_site["fn"], {name}
    aux = guide_trace.nodes.get(f"{name}_unconstrained")             # AutoNormal's per-site auxiliary
    if aux is not None and aux["type"] == "sample" and aux["infer"].get("is_auxiliary"):
        prior = model_site["fn"]
        t = biject_to(prior.support)
        if not _is_identity(t):
            prior = TransformedDistribution(prior, [t.inv])
        return aux["fn"], prior, {name, aux["name"]}
    return None                       # drawn jointly with others by an AutoContinuous guide


class JitGeometricJSD_ELBO(GeometricJSD_ELBO, JitTraceMeanField_ELBO):
    """:class:`GeometricJSD_ELBO` compiled with Pyro's JIT (static model structure required)."""

#: the names users reach for (Pyro's style: ``Trace_ELBO``, ``RenyiELBO``)
GJS_ELBO = GeometricJSD_ELBO
JitGJS_ELBO = JitGeometricJSD_ELBO


__all__ = ["GJS_ELBO", "GeometricJSD_ELBO", "JitGJS_ELBO", "JitGeometricJSD_ELBO"]
