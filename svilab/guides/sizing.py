r"""Guides sized by the model: the flow's widths from the latent dimension D, and the memory each guide
needs at D, checked before anything is fitted.

**The flow's width.** Pyro's autoregressive network (``AutoRegressiveNN``) needs every hidden width
:math:`\ge D` (each output :math:`d` must see the inputs :math:`<d` through its masks). svilab's default is
one layer of width :math:`\max(16, 2D)` up to :math:`D = 100` and :math:`D + 100` above it (so the output
layer, :math:`h \times (4K-1)D` weights for K spline bins, grows like :math:`D^2`, not faster); the widths
and the number of layers can be set (``AutoFlow(hidden_dims=..., num_transforms=...)``,
``svilab posterior --flow-hidden ... --flow-layers ...``), and a width below D is refused with both numbers.

**Memory per guide** (:func:`guide_memory_bytes`, float64 as user models run; every parameter held four
times: value, gradient, Adam's two moments; plus what one step builds):

=============  ======================================================================================
``lognormal``  :math:`O(D)`: 2D parameters
``lowrank``    :math:`O(Dr)`: :math:`D(r + 2)` parameters, :math:`r = \min(\mathrm{round}(\sqrt D), 32)` (Pyro's
               ``AutoLowRankMultivariateNormal``; never a :math:`D \times D` matrix)
``mvn``        :math:`O(D^2)`: the :math:`D \times D` Cholesky factor, and the same again for each step's
               triangular products
``flow``       :math:`O(D^2)`: the affine layer's :math:`D \times D` and the spline network's weights
=============  ======================================================================================

The Laplace start computes the :math:`D \times D` Hessian and its factors (:func:`laplace_bytes`);
where they would not fit it is skipped, with the reason, and every guide starts from Stan's uniform init.
"""

from __future__ import annotations

import math

#: the flow's smallest width, and the width beyond D above 100 dimensions
FLOW_MIN_HIDDEN = 16
FLOW_EXTRA_HIDDEN = 100
#: the lowrank guide's largest default rank (reached at D = 1024)
LOWRANK_MAX_RANK = 32
#: copies of each parameter during training: value, gradient, Adam's two moments
PARAM_COPIES = 4
#: D x D float64 matrices the Laplace start holds at once (Hessian, precision, its scaled copy, Cholesky,
#: covariance, the eigen-decomposition's work space)
LAPLACE_MATRICES = 8


def flow_hidden_dims(dim: int, hidden_dims=None) -> list[int]:
    """The widths of the flow's autoregressive network for latent dimension ``dim``: ``hidden_dims`` checked
    (every width >= dim), or the default (module docstring) when None."""
    dim = max(int(dim), 1)
    if hidden_dims is None:
        return [max(FLOW_MIN_HIDDEN, 2 * dim) if dim <= 100 else dim + FLOW_EXTRA_HIDDEN]
    widths = [int(h) for h in hidden_dims]
    if not widths:
        raise ValueError("flow: give at least one hidden width (or none, to size them from the latent dimension)")
    small = [h for h in widths if h < dim]
    if small:
        raise ValueError(f"flow: hidden width {small[0]} is less than the latent dimension {dim} (the "
                         f"autoregressive network needs every width >= {dim}); give --flow-hidden {dim} or more, "
                         "or leave it out to size the flow from the dimension")
    return widths


def spline_outputs(count_bins: int = 8) -> int:
    """Outputs per dimension of a linear-order spline layer's autoregressive network (Pyro's
    ``spline_autoregressive``: widths, heights, derivatives and the lambdas, ``4 * count_bins - 1``)."""
    return 4 * int(count_bins) - 1


def flow_parameter_count(dim: int, hidden_dims=None, num_transforms: int = 1, count_bins: int = 8) -> int:
    """Weights of :class:`~svilab.guides.flow.AutoFlow` at latent dimension ``dim`` (the spline layers'
    autoregressive networks, :func:`spline_outputs` per dimension, and the affine layer)."""
    widths = flow_hidden_dims(dim, hidden_dims)
    sizes = [dim, *widths, spline_outputs(count_bins) * dim]
    network = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    return int(num_transforms) * network + dim * dim + 2 * dim


def lowrank_rank(dim: int) -> int:
    r"""The rank of the ``lowrank`` guide at dimension ``dim``: :math:`\mathrm{round}(\sqrt D)` (at least 1),
    Pyro's default for ``AutoLowRankMultivariateNormal``, up to :data:`LOWRANK_MAX_RANK` (a step costs
    :math:`O(D r^2)`: the cap keeps it linear in D, :mod:`svilab.guides.lowrank`)."""
    return min(LOWRANK_MAX_RANK, max(1, int(round(math.sqrt(max(int(dim), 1))))))


def guide_memory_bytes(name: str, dim: int, particles: int = 1, itemsize: int = 8, flow_hidden=None,
                       flow_layers: int = 1) -> int:
    """Peak bytes of one SVI step of guide ``name`` at latent dimension ``dim`` with ``particles`` draws
    (the guide's own part; the model's is :func:`svilab.memory.check_particles`)."""
    d = max(int(dim), 1)
    draws = 4 * particles * d                                   # z, log q and their gradients
    if name == "mvn":
        params = d * d + d
        work = 2 * d * d + particles * d * 2                     # scale_tril, its triangular solve
    elif name == "flow":
        params = flow_parameter_count(d, flow_hidden, flow_layers)
        widths = flow_hidden_dims(d, flow_hidden)
        work = d * d + 3 * flow_layers * particles * (sum(widths) + spline_outputs() * d)
    elif name == "lowrank":
        params = d * (lowrank_rank(d) + 2)
        work = 2 * particles * lowrank_rank(d)
    else:                                                       # mean-field guides
        params, work = 2 * d, 0
    return itemsize * (PARAM_COPIES * params + work + draws)


def check_guide_memory(name: str, dim: int, particles: int = 1, itemsize: int = 8, flow_hidden=None,
                       flow_layers: int = 1) -> None:
    """Refuse guide ``name`` at dimension ``dim`` when one step would not fit svilab's memory budget; the
    message names the dimension, the amount and the guide that would fit (``lowrank``)."""
    from svilab.memory import check_memory

    nbytes = guide_memory_bytes(name, dim, particles, itemsize, flow_hidden, flow_layers)
    hint = {"mvn": f" (its {dim} x {dim} covariance factor); the lowrank guide (rank {lowrank_rank(dim)}) or "
                   "lognormal fit in memory linear in D",
            "flow": " (its D x D affine layer and autoregressive network); the lowrank guide or lognormal fit in "
                    "memory linear in D, or give --flow-hidden a smaller width (>= D)"}.get(name, "")
    try:
        check_memory(nbytes, f"guide {name} at {dim} latent dimensions with {particles} particles")
    except ValueError as exc:
        raise ValueError(f"{exc}{hint}") from None


def laplace_bytes(dim: int) -> int:
    """Peak bytes of the Laplace start at dimension ``dim`` (its D x D matrices, float64)."""
    return LAPLACE_MATRICES * 8 * max(int(dim), 1) ** 2


__all__ = ["FLOW_EXTRA_HIDDEN", "FLOW_MIN_HIDDEN", "LOWRANK_MAX_RANK", "check_guide_memory", "flow_hidden_dims",
           "flow_parameter_count",
           "guide_memory_bytes", "laplace_bytes", "lowrank_rank"]
