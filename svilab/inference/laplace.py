r"""A Laplace approximation on the unconstrained space, to start guides where the posterior is.

Badly scaled posteriors defeat a first-order optimiser started at a random point: in the
earnings regression (height on its raw scale) the two coefficients are correlated -0.999 with sds
0.45 and 0.0068, and Adam, whose steps are about ``lr`` in every coordinate, walks that ridge for
tens of thousands of steps. A second-order method does not care: :func:`laplace` finds the mode
:math:`\hat\zeta` of the unconstrained log density :math:`\log\tilde p(x, \zeta)`
(:mod:`svilab.inference.potential`) with L-BFGS (strong Wolfe line search) and the covariance
:math:`\Sigma = (-\nabla^2 \log\tilde p(\hat\zeta))^{-1}` from the autograd Hessian,

.. math:: q_{\rm Laplace}(\zeta) = \mathcal N(\hat\zeta, \Sigma).

:func:`start_guide_at` puts a guide there before SVI: ``mvn`` (``AutoMultivariateNormal``) gets
:math:`(\hat\zeta, \mathrm{chol}\,\Sigma)`; ``lognormal`` (``AutoNormal``) gets :math:`\hat\zeta`
and the mean-field optimum for a Gaussian, :math:`\sigma_i = \Lambda_{ii}^{-1/2}` with
:math:`\Lambda = \Sigma^{-1}`; ``flow`` gets them in its affine layer (the splines start near the
identity). SVI then corrects what the Gaussian gets wrong (skew, heavy tails, a funnel).

When the mode does not exist or the Hessian is not negative definite (a funnel, a flat direction),
:func:`laplace` says so (``ok = False`` and a message) and the guide keeps the ordinary init.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from svilab.inference.potential import UnconstrainedTarget


@dataclass
class LaplaceApproximation:
    """Mode, covariance and precision on the unconstrained space (``ok`` False: not usable, see ``message``)."""

    loc: torch.Tensor
    cov: torch.Tensor | None
    precision: torch.Tensor | None
    ok: bool
    message: str
    log_density: float = math.nan


def laplace(target: UnconstrainedTarget, init: torch.Tensor, max_iter: int = 1000, tol: float = 1e-9
            ) -> LaplaceApproximation:
    """L-BFGS to the mode of ``target`` from ``init`` (shape ``(D,)``), then the Hessian there."""
    z = init.detach().clone().to(torch.float64).requires_grad_(True)
    opt = torch.optim.LBFGS([z], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -target(z[:, None])[0]
        if not torch.isfinite(loss):
            raise FloatingPointError
        loss.backward()
        return loss

    try:
        with torch.enable_grad():
            opt.step(closure)
    except FloatingPointError:
        return LaplaceApproximation(z.detach(), None, None, False, "the log density became non-finite during the "
                                                                "mode search")
    mode = z.detach()
    value = float(target(mode[:, None])[0])
    with torch.enable_grad():
        grad = target.grad(mode[:, None])[:, 0]
        hess = torch.autograd.functional.hessian(lambda v: target(v[:, None])[0], mode)
    if not (math.isfinite(value) and torch.isfinite(hess).all()):
        return LaplaceApproximation(mode, None, None, False, "non-finite log density or Hessian at the mode")
    scale = 1.0 + float(hess.abs().max())
    if float(grad.abs().max()) > 1e-3 * scale:
        return LaplaceApproximation(mode, None, None, False, f"no mode found (gradient {float(grad.abs().max()):.3g} "
                                                             "after L-BFGS)", value)
    precision = -0.5 * (hess + hess.T)
    eig = torch.linalg.eigvalsh(precision)
    if float(eig.min()) <= 1e-10 * max(float(eig.max()), 1e-300):
        return LaplaceApproximation(mode, None, None, False, "the Hessian at the mode is not negative definite "
                                                             "(a flat direction or a saddle)", value)
    cov = torch.cholesky_inverse(torch.linalg.cholesky(precision))
    return LaplaceApproximation(mode, cov, precision, True, "mode and Hessian found", value)


def start_guide_at(guide, approx: LaplaceApproximation, target: UnconstrainedTarget) -> None:
    """Set an ``AutoNormal``, ``AutoMultivariateNormal`` or :class:`~svilab.guides.flow.AutoFlow` guide
    (whose prototype trace exists: run the guide once first) to the Laplace approximation."""
    from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

    from svilab.guides.flow import AutoFlow

    if not approx.ok:
        raise ValueError(f"Laplace approximation not usable: {approx.message}")
    loc, cov = approx.loc, approx.cov
    with torch.no_grad():
        if isinstance(guide, AutoMultivariateNormal):
            L = torch.linalg.cholesky(cov).to(guide.loc.dtype)
            d = L.diagonal()
            guide.loc.data.copy_(loc.to(guide.loc.dtype))
            guide.scale = d
            guide.scale_tril = L / d[:, None]
        elif isinstance(guide, AutoNormal):
            sd = approx.precision.diagonal().rsqrt()
            start = 0
            for name, k in target.sizes.items():
                shape = target.shapes[name]
                setattr(guide.locs, name, loc[start:start + k].reshape(shape).clone())
                setattr(guide.scales, name, sd[start:start + k].reshape(shape).clone())
                start += k
        elif isinstance(guide, AutoFlow):
            guide.get_posterior()  # builds the transform
            affine = guide.transform.parts[-1]
            L = torch.linalg.cholesky(cov).to(affine.loc.dtype)
            affine.loc.data.copy_(loc.to(affine.loc.dtype))
            affine.log_diag.data.copy_(L.diagonal().log())
            affine.off_diag.data.copy_(L.tril(-1))
        else:
            raise ValueError(f"cannot start a {type(guide).__name__} at a Laplace approximation")


__all__ = ["LaplaceApproximation", "laplace", "start_guide_at"]
