r"""SVI on data subsamples, evaluation on all the data: Pyro's ``pyro.plate(name, N, subsample_size=B)``.

A model written for big data takes the subsample size as an argument and declares its data plate with it,
indexing the data with the plate's indices, as Pyro's tutorials do::

    def model(data, subsample_size=None):
        beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([P]).to_event(1))
        with pyro.plate("data", N, subsample_size=subsample_size) as idx:
            pyro.sample("y", dist.Bernoulli(logits=(data["X"][idx] * beta).sum(-1)), obs=data["y"][idx])

With ``subsample_size=B`` each SVI step sees B rows drawn afresh (torch's generator, so
``pyro.set_rng_seed`` makes a run reproducible), the likelihood scaled by N/B by Pyro's plate: the loss is an
unbiased estimate of the full-data loss, and a step costs memory and time in B, not N. With
``subsample_size=None`` (the default) the plate holds every row: that is how svilab evaluates a fit (the ELBO,
Pareto k-hat, the draws, the pointwise log-likelihood are the whole data set's). ``svilab posterior --model
FILE --batch-size B`` passes ``subsample_size=B`` to the model for the SVI steps only.

Scope: the subsampled plates hold observed sites only (global latents, as in a regression); a latent site
inside a subsampled plate (local latents) needs its guide subsampled with it and is refused here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.util
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample


@dataclass(frozen=True)
class SubsampledPlate:
    """A plate the model declares with ``subsample_size`` below its ``size``."""

    name: str
    size: int
    subsample_size: int


def subsampled_plates(model, *args, **kwargs) -> list[SubsampledPlate]:
    """The subsampled plates of ``model(*args, **kwargs)``, from one trace (no gradient, every random number
    generator put back). A ValueError when a latent site sits inside one (module docstring)."""
    return _subsampled(_trace(model, *args, **kwargs))


def _subsampled(trace) -> list[SubsampledPlate]:
    plates = [SubsampledPlate(name, int(site["fn"].size), int(site["value"].numel()))
              for name, site in trace.nodes.items()
              if site["type"] == "sample" and site_is_subsample(site) and site["value"].numel() < site["fn"].size]
    names = {p.name for p in plates}
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site):
            inside = [f.name for f in site["cond_indep_stack"] if f.name in names]
            if inside:
                raise ValueError(f"latent site {name!r} is inside the subsampled plate {inside[0]!r}: svilab "
                                 "subsamples plates of observed sites only (global latents); local latents need "
                                 "their guide subsampled with them")
    return plates


def takes_subsample_size(fn) -> bool:
    """``fn`` has a parameter named ``subsample_size`` (module docstring)."""
    import inspect

    try:
        return "subsample_size" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def check_batch_size(batch_size: int, model, *args, option: str = "--batch-size", function=None,
                     **kwargs) -> list[SubsampledPlate]:
    """The plates ``model(*args, subsample_size=batch_size, **kwargs)`` subsamples, or a ValueError naming the
    option and the number: below 1, a model without the ``subsample_size`` argument or whose plates do not use
    it, a batch larger than a plate's rows (Pyro would silently take every row). ``function``: the user's
    function whose signature says whether it takes ``subsample_size`` (default ``model``; a wrapper that
    passes its keywords on, as :class:`~svilab.models.user.UserModel` does, names the function it calls)."""
    b = int(batch_size)
    if b != batch_size or b < 1:
        raise ValueError(f"{option} must be an integer >= 1, got {batch_size}")
    how = ("write the model as def model(data, subsample_size=None) with pyro.plate('data', N, "
           "subsample_size=subsample_size), indexing the data with the plate's indices")
    if not takes_subsample_size(model if function is None else function):
        raise ValueError(f"{option}: the model function takes no subsample_size argument; {how}")
    # one trace at 1 row (always valid; Pyro raises for a size above the rows): the plates that take the argument
    trace = _trace(model, *args, subsample_size=1, **kwargs)
    taking = [(name, int(site["fn"].size)) for name, site in trace.nodes.items()
              if site["type"] == "sample" and site_is_subsample(site) and site["fn"].subsample_size == 1]
    if not taking:
        raise ValueError(f"{option} {b}: no plate of the model took subsample_size={b} (every plate kept all its "
                         f"rows); {how}")
    too_big = [(name, size) for name, size in taking if b > size]
    if too_big:
        raise ValueError(f"{option} {b} is larger than the data: plate {too_big[0][0]!r} has {too_big[0][1]} rows")
    _subsampled(trace)                                             # no latent site inside them
    return [SubsampledPlate(name, size, b) for name, size in taking if b < size]


def _trace(model, *args, **kwargs):
    state = pyro.util.get_rng_state()
    try:
        with torch.no_grad(), poutine.block():
            return poutine.trace(model).get_trace(*args, **kwargs)
    finally:
        pyro.util.set_rng_state(state)


def with_batch_size(model, batch_size: int):
    """``model`` called with ``subsample_size=batch_size`` (its other arguments passed through)."""
    b = int(batch_size)

    def minibatch(*args, **kwargs):
        return model(*args, subsample_size=b, **kwargs)

    minibatch.__name__ = getattr(model, "__name__", "model")
    return minibatch


__all__ = ["SubsampledPlate", "check_batch_size", "subsampled_plates", "takes_subsample_size", "with_batch_size"]
