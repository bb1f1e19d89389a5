r"""NUTS on a model reparameterised by a fitted guide: neural transport (NeuTra; Hoffman et al. 2019).

A fitted :class:`~pyro.infer.autoguide.AutoContinuous` guide is a map :math:`T` from its base
distribution (a standard Normal :math:`z`) to the model's stacked unconstrained latents
:math:`\zeta = T(z)`. Where the guide is close to the posterior, the posterior pulled back through it,

.. math::

    \tilde p(z) \propto p\big(T(z)\big)\, \big|\det \partial T / \partial z\big|,

is close to :math:`\mathcal N(0, I)`: round, whatever the geometry of :math:`p` (a funnel, a banana, a
-0.9999 ridge), so NUTS with a plain mass matrix and short trees samples it. NUTS corrects whatever the
guide got wrong (the draws are exact MCMC draws of :math:`p` after mapping back through :math:`T`); the
guide only decides how easy that is. Pyro's :class:`~pyro.infer.reparam.NeuTraReparam` does the
rewriting (the model's latent sites become Delta sites of one ``<first site>_shared_latent``);
:func:`neutra_nuts` runs svilab's :func:`~svilab.inference.mcmc.run_nuts` on the rewritten model and
hands back a run whose draws are the model's own sites (:class:`NeuTraChains`), so the InferenceData,
R-hat, ESS and divergences are those of any NUTS run on the model.

Cost: every leapfrog step evaluates the guide's transform and its Jacobian besides the model, so a
flow with spline layers makes each step dearer than on the model itself; it pays where the model's own
geometry would force tiny steps, many divergences or the maximum tree depth.
"""

from __future__ import annotations

import torch
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.reparam import NeuTraReparam
from torch.distributions.transforms import IndependentTransform

from svilab.inference.mcmc import NUTSResult, mcmc_diagnostics, run_nuts
from svilab.inference.sites import model_sites


class _VectorTransform:
    """The guide as :class:`~pyro.infer.reparam.NeuTraReparam` sees it, with a transform of the whole latent
    vector (``event_dim`` 1). Pyro's NeuTra adds the transform's log-Jacobian to the first latent site's
    density as it comes; for an elementwise transform (``AutoDiagonalNormal``'s ``AffineTransform``,
    ``event_dim`` 0) that is a vector of D terms, which broadcasts the site's own log-density D times: its
    precision D times too large (measured: a 2-d Gaussian's sds 0.45x with a 5-dimensional latent vector)."""

    def __init__(self, guide: AutoContinuous) -> None:
        self._guide = guide

    def __getattr__(self, name):
        return getattr(self._guide, name)

    def get_transform(self, *args, **kwargs):
        t = self._guide.get_transform(*args, **kwargs)
        return IndependentTransform(t, 1) if t.event_dim == 0 else t


class NeuTraChains:
    """A NUTS run on a NeuTra-rewritten model seen as a run on the model's own latent sites:
    ``get_samples`` (constrained values, ``(chains, draws, *site shape)`` with ``group_by_chain``) and
    ``diagnostics`` (R-hat and ESS of those sites, the divergences of the run), as
    :class:`pyro.infer.MCMC` gives them; ``kernel.model`` is the original model."""

    class _Kernel:
        def __init__(self, model, inner) -> None:
            self.model, self.inner = model, inner          # the original model; the kernel that ran

    def __init__(self, run, neutra: NeuTraReparam, model, max_plate_nesting: int) -> None:
        self.run, self.neutra, self.max_plate_nesting = run, neutra, max_plate_nesting
        self.kernel = NeuTraChains._Kernel(model, run.kernel)
        self.num_chains = run.num_chains
        self.args, self.kwargs = getattr(run, "args", ()), getattr(run, "kwargs", {})
        self._samples: dict | None = None

    def get_samples(self, num_samples=None, group_by_chain: bool = False) -> dict:
        """The model's latent sites (constrained), ``{site: (chains * draws, *shape)}``, or ``(chains, draws,
        *shape)`` with ``group_by_chain``; ``num_samples`` is ignored (every kept draw), as in
        :class:`~svilab.inference.mcmc.SequentialChains`."""
        if self._samples is None:                       # mapped back once (the InferenceData and R-hat both ask)
            (z,) = self.run.get_samples(group_by_chain=True).values()         # (chains, draws, D): the base
            chains, draws = z.shape[:2]
            nodes = self.neutra.guide.prototype_trace.nodes
            # the draws' batch dimension left of the model's plates (Pyro's transform_sample needs it there)
            lead = (chains * draws,) + (1,) * self.max_plate_nesting
            with torch.no_grad():
                values = self.neutra.transform_sample(z.reshape(lead + (z.shape[-1],)))
            self._samples = {k: v.reshape((chains, draws) + tuple(nodes[k]["value"].shape)) for k, v in values.items()}
        if group_by_chain:
            return self._samples
        return {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in self._samples.items()}

    def diagnostics(self) -> dict:
        """R-hat and ESS of the model's sites (:func:`~svilab.inference.mcmc.mcmc_diagnostics`) with the run's
        per-chain statistics (``divergences``, ``acceptance rate``), keyed as :class:`pyro.infer.MCMC` keys them."""
        diag = mcmc_diagnostics(self.get_samples(group_by_chain=True))
        inner = self.run.diagnostics()
        for name, per in inner.items():
            if isinstance(per, dict) and any(str(k).startswith("chain ") for k in per):   # divergences, ...
                diag[name] = per
        return diag


def neutra_nuts(model, guide: AutoContinuous, *args, **nuts_options) -> NUTSResult:
    """NUTS on ``model(*args)`` in the coordinates of the fitted ``guide``'s base distribution (see the module).

    :param model: the Pyro model (static structure; its latent sites are the guide's).
    :param guide: a fitted :class:`~pyro.infer.autoguide.AutoContinuous` guide of ``model`` (svilab's
        ``flow``, ``mvn``, ``lognormal`` and their whitened forms are); its parameters are frozen
        (``requires_grad_(False)``): NUTS differentiates the model, not the guide.
    :param nuts_options: :func:`~svilab.inference.mcmc.run_nuts`'s options (``num_samples``,
        ``warmup_steps``, ``num_chains``, ``seed``, ``max_plate_nesting``, ``time_limit``, ...). The mass
        matrix is adapted as usual, from the identity: the base space is already round where the guide is good.
    :returns: a :class:`~svilab.inference.mcmc.NUTSResult` whose ``mcmc`` is a :class:`NeuTraChains` (draws
        of the model's sites) and whose ``config["reparam"]`` is ``"neutra"``.
    :raises TypeError: a guide that is not an ``AutoContinuous`` (a hand-written guide has no transform).
    """
    if not isinstance(guide, AutoContinuous):
        raise TypeError(f"NeuTra needs an AutoContinuous guide (a fitted autoguide with a transform, such as "
                        f"svilab's flow, mvn or lognormal), got {type(guide).__name__}")
    for key in ("inverse_mass_matrix", "initial_points"):
        if nuts_options.get(key) is not None:
            raise ValueError(f"{key} is in the model's coordinates; NeuTra runs NUTS in the guide's base space")
    guide.requires_grad_(False)
    neutra = NeuTraReparam(guide)
    neutra.guide = _VectorTransform(guide)
    nesting = nuts_options.get("max_plate_nesting")
    if nesting is None:
        nesting = nuts_options["max_plate_nesting"] = model_sites(model, *args).max_plate_nesting
    res = run_nuts(neutra.reparam(model), *args, **nuts_options)
    res.mcmc = NeuTraChains(res.mcmc, neutra, model, nesting)
    res.config["reparam"] = "neutra"
    return res


__all__ = ["NeuTraChains", "neutra_nuts"]
