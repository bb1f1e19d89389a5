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

L-BFGS alone stops short on a ridge (a regression on calendar years: coefficients correlated
-0.99999, scales 1e5 apart), so :func:`laplace` finishes with damped Newton steps on the autograd
Hessian (for D up to 500), judges convergence by the Newton decrement (log density still to gain, in
nats: free of the coordinates' scales) and positive definiteness by the Cholesky of the precision
scaled to a unit diagonal (not by an eigenvalue ratio, which a condition number of 1e10 fails).
When the mode does not exist or the Hessian is not negative definite (a funnel, a flat direction),
:func:`laplace` says so in numbers (``ok = False`` and a message) and the guide keeps the ordinary init.
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
    #: condition number of the precision (largest over smallest eigenvalue); nan when not ``ok``
    condition_number: float = math.nan


def _scaled_cholesky(precision: torch.Tensor):
    """``(L, d)`` with ``L L^T = D^{-1/2} P D^{-1/2}``, ``d = diag(P)^{1/2}``: the Cholesky of the
    precision scaled to a unit diagonal (a correlation-like matrix), so that success means positive
    definite whatever the scales; None when it fails or a diagonal entry is not positive."""
    diag = precision.diagonal()
    if not bool((diag > 0).all()):
        return None
    d = diag.sqrt()
    L, info = torch.linalg.cholesky_ex(precision / d[:, None] / d[None, :])
    return (L, d) if int(info) == 0 else None


def _scaled_solve(chol, b: torch.Tensor) -> torch.Tensor:
    """:math:`A^{-1} b` for the ``(L, d)`` of :func:`_scaled_cholesky` of ``A``."""
    L, d = chol
    return torch.cholesky_solve((b / d)[:, None], L)[:, 0] / d


def _hessian(target: UnconstrainedTarget, z: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        value = float(target(z[:, None])[0])
        grad = target.grad(z[:, None])[:, 0]
        hess = torch.autograd.functional.hessian(lambda v: target(v[:, None])[0], z)
    return value, grad, 0.5 * (hess + hess.T)


def _newton(target: UnconstrainedTarget, z: torch.Tensor, max_iter: int = 100, tol: float = 1e-10):
    r"""Damped Newton (Levenberg-Marquardt on the diagonally scaled precision) to the mode from ``z``:
    each step solves :math:`(P + \mu\,\mathrm{diag}|P|)\,s = \nabla`, is kept if the log density
    rises (then :math:`\mu` shrinks) and retried with a larger :math:`\mu` if not; it stops when the
    Newton decrement :math:`\nabla^T P^{-1} \nabla / 2` (the log density still to gain, in nats, a
    quantity free of the coordinates' scales) is below ``tol``. Returns ``(z, value, grad, precision,
    decrement, iterations)``."""
    value, grad, hess = _hessian(target, z)
    mu, it, decrement = 1e-3, 0, math.inf
    for it in range(1, max_iter + 1):
        precision = -hess
        chol = _scaled_cholesky(precision)
        if chol is not None:
            decrement = 0.5 * float(grad @ _scaled_solve(chol, grad))
            if decrement < tol:
                return z, value, grad, precision, decrement, it
        scale = precision.diagonal().abs().clamp_min(1e-300)
        improved = False
        while mu < 1e12:
            damped = precision + mu * torch.diag(scale)
            chol_d = _scaled_cholesky(damped)
            if chol_d is not None:
                new = z + _scaled_solve(chol_d, grad)
                new_value = float(target(new[:, None])[0])
                if math.isfinite(new_value) and new_value >= value - 1e-12 * abs(value):
                    z = new
                    mu = max(mu / 10, 1e-12)
                    improved = True
                    break
            mu *= 10
        if not improved:
            break
        value, grad, hess = _hessian(target, z)
    return z, value, grad, -hess, decrement, it


def laplace(target: UnconstrainedTarget, init: torch.Tensor, max_iter: int = 1000, tol: float = 1e-9,
            newton_dim: int = 500) -> LaplaceApproximation:
    """The mode of ``target`` from ``init`` (shape ``(D,)``) and the Hessian there (module docstring).

    L-BFGS first (cheap per step, any D); then, for ``D <= newton_dim``, damped Newton steps with the
    autograd Hessian until the Newton decrement is below 1e-10 nats, which finishes what L-BFGS leaves on
    a badly scaled ridge in a few steps. Whether the Hessian is negative definite is decided on the
    precision scaled to a unit diagonal (its Cholesky), so a posterior whose coordinates differ in
    scale by 1e6, or are correlated -0.99999, passes; a failure says why in numbers."""
    z = init.detach().clone().to(torch.float64).requires_grad_(True)
    opt = torch.optim.LBFGS([z], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
                            history_size=50, line_search_fn="strong_wolfe")

    best = [-math.inf]

    def closure():
        opt.zero_grad()
        try:
            loss = -target(z[:, None])[0]
        except (ValueError, RuntimeError) as exc:   # e.g. a scale that underflowed to 0: Pyro's validation
            raise FloatingPointError from exc
        if not torch.isfinite(loss):
            raise FloatingPointError
        best[0] = max(best[0], -float(loss.detach()))
        loss.backward()
        return loss

    try:
        with torch.enable_grad():
            opt.step(closure)
    except FloatingPointError:
        return LaplaceApproximation(z.detach(), None, None, False, _no_mode(target, z.detach(), best[0]))
    mode = z.detach()
    if target.dim <= newton_dim:
        try:
            mode, value, grad, precision, decrement, iters = _newton(target, mode)
        except (ValueError, RuntimeError):
            return LaplaceApproximation(mode, None, None, False, _no_mode(target, mode, best[0]))
    else:
        value, grad, hess = _hessian(target, mode)
        precision, iters = -hess, 0
        chol = _scaled_cholesky(precision)
        decrement = math.inf if chol is None else 0.5 * float(grad @ _scaled_solve(chol, grad))
    if not (math.isfinite(value) and torch.isfinite(precision).all()):
        return LaplaceApproximation(mode, None, None, False, "non-finite log density or Hessian at the mode")
    chol = _scaled_cholesky(precision)
    if chol is None:
        d = precision.diagonal().abs().clamp_min(1e-300).sqrt()
        eig, vec = torch.linalg.eigh(precision / d[:, None] / d[None, :])
        worst = _names(target)[int(vec[:, 0].abs().argmax())]
        return LaplaceApproximation(mode, None, None, False, (
            f"the Hessian at the end of the mode search is not negative definite: the precision scaled to a unit "
            f"diagonal has eigenvalue {float(eig[0]):.3g} (1 for independent coordinates, 0 for a flat direction), "
            f"mostly along {worst}; the posterior has no mode there (a funnel, an unbounded direction), or the "
            f"search stopped short (gradient norm {float(grad.norm()):.3g})"), value)
    if decrement > 1e-6:
        return LaplaceApproximation(mode, None, None, False, (
            f"no mode found: {decrement:.3g} nats of log density still to gain by the Newton step after "
            f"{iters} Newton iterations (gradient norm {float(grad.norm()):.3g})"), value)
    L, d = chol
    cov = torch.cholesky_inverse(L) / d[:, None] / d[None, :]
    cond = torch.linalg.eigvalsh(precision / d[:, None] / d[None, :])
    corr = float(cond[-1] / cond[0])
    raw = condition_number(precision)
    return LaplaceApproximation(mode, 0.5 * (cov + cov.T), precision, True,
                                f"mode and Hessian found (Newton decrement {decrement:.1e} nats; condition number "
                                f"{corr:.3g} after scaling, {raw:.3g} before)", value, raw)


def _names(target) -> list[str]:
    """The target's coordinate names (Stan's style), or ``z[i]``."""
    return list(getattr(target, "names", None) or [f"z[{i + 1}]" for i in range(target.dim)])


def _no_mode(target: UnconstrainedTarget, z: torch.Tensor, best: float) -> str:
    """Why a mode search that left the region where the model can be evaluated failed, in numbers: the
    coordinate furthest out and the log density reached before."""
    i = int(z.abs().argmax())
    return (f"the mode search went where the log density is not finite (the best it had reached: {best:.6g}; "
            f"{_names(target)[i]} at {float(z[i]):.4g} on the unconstrained scale): the posterior has no mode in that "
            "direction (a funnel, where the density grows without bound as a scale goes to 0: a non-centred "
            "parameterisation has one; or an improper posterior)")


def condition_number(precision: torch.Tensor) -> float:
    """The condition number of a symmetric positive definite matrix (largest over smallest eigenvalue; inf
    when it is not positive definite): what whitening by the approximation removes."""
    eig = torch.linalg.eigvalsh(precision)
    return float(eig[-1] / eig[0]) if float(eig[0]) > 0 else math.inf


def start_guide_at(guide, approx: LaplaceApproximation, target: UnconstrainedTarget) -> None:
    """Set an ``AutoNormal``, ``AutoMultivariateNormal``, ``AutoLowRankMultivariateNormal`` or
    :class:`~svilab.guides.flow.AutoFlow` guide (whose prototype trace exists: run the guide once first) to
    the Laplace approximation. The low-rank guide gets the covariance's leading ``rank`` eigen-directions and
    the rest of each variance on its diagonal (at least 1% of it)."""
    from pyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoMultivariateNormal, AutoNormal

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
        elif isinstance(guide, AutoLowRankMultivariateNormal):
            eig, vec = torch.linalg.eigh(cov)
            r = guide.rank
            factor = vec[:, -r:] * eig[-r:].clamp_min(0).sqrt()               # (D, r): the leading directions
            var = cov.diagonal()
            rest = (var - (factor ** 2).sum(-1)).clamp_min(0.01 * var)
            scale = rest.sqrt()
            guide.loc.data.copy_(loc.to(guide.loc.dtype))
            guide.scale = scale.to(guide.loc.dtype)
            guide.cov_factor.data.copy_((factor / scale[:, None]).to(guide.loc.dtype))
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


__all__ = ["LaplaceApproximation", "condition_number", "laplace", "start_guide_at"]
