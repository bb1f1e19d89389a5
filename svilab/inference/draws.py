r"""Posterior draws of any Pyro model, vectorized: from a guide, or replayed from MCMC samples.

Both functions evaluate the model on a whole batch of draws at once, inside a particle plate at
``dim = -(max_plate_nesting + 1)`` (outside every plate of the model, see
:mod:`svilab.inference.sites`), in chunks of ``chunk`` draws so memory stays bounded:

* :func:`guide_draws`: :math:`z_s \sim q` through Pyro's
  :func:`~pyro.infer.importance.vectorized_importance_weights`, which also gives the importance
  log-weights :math:`\log w_s = \log p(x, z_s) - \log q(z_s)` (for the ELBO and Pareto-:math:`\hat k`).
* :func:`replay_draws`: given draws (e.g. NUTS samples), the model conditioned on them.

Each returns a :class:`Draws`: for every latent and deterministic site an array of shape
``(S, *site_shape)`` and for every observed site the pointwise log-likelihood
:math:`\log p(x_i \mid z_s)`, shape ``(S, *batch_shape)``. A vector latent drawn under the
particle plate has shape ``(S, 1, ..., 1, *site_shape)``; it is reshaped with the site's own
shape from the prototype trace (Pyro's ``Predictive`` loses a vector site's event dims here and
then fails to broadcast it against the data).

The model must broadcast over extra batch dims on the left of its latent values (Pyro's rule for
``vectorize_particles=True``: write ``(X * beta).sum(-1)``, not ``X @ beta``); otherwise the
error says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer.importance import vectorized_importance_weights

from svilab.inference.sites import ModelSites, merge_model_kwargs, model_sites
from svilab.memory import check_memory
from svilab.validation import positive_int

#: draws evaluated together (bounds memory: a chunk holds chunk x (latent + observed) values)
DEFAULT_CHUNK = 4096


@dataclass
class Draws:
    """Draws of a posterior approximation (numpy, float64, leading dim = draws)."""

    latent: dict[str, np.ndarray]
    deterministic: dict[str, np.ndarray] = field(default_factory=dict)
    log_likelihood: dict[str, np.ndarray] = field(default_factory=dict)
    log_weights: np.ndarray | None = None

    @property
    def num_draws(self) -> int:
        return len(next(iter(self.latent.values())))

    @property
    def posterior(self) -> dict[str, np.ndarray]:
        """Latent and deterministic sites together."""
        return {**self.latent, **self.deterministic}


class VectorizationError(ValueError):
    """The model cannot be evaluated on a batch of draws."""


def _strip(value: torch.Tensor, n: int, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """``(n, 1, ..., 1, *shape)`` (possibly broadcast) -> ``(n, *shape)``."""
    extra = value.dim() - 1 - len(shape)
    if value.dim() == 0 or value.shape[0] != n and n != 1 or extra < 0 or any(d != 1 for d in value.shape[1:1 + extra]):
        raise VectorizationError(f"site {name!r}: got shape {tuple(value.shape)} for {n} draws of a site of shape "
                                 f"{tuple(shape)}")
    value = value.reshape((value.shape[0],) + tuple(value.shape[1 + extra:]))
    return value.expand((n,) + tuple(shape))


_SHAPE_WORDS = ("size of tensor", "shape", "broadcast", "dimension", "mat1 and mat2", "index", "packing tensors")


def vectorization_error(exc: Exception, n: int, nesting: int, what: str | None = None) -> ValueError:
    """A shape error means the model does not vectorize (a :class:`VectorizationError` saying how to write it);
    anything else (invalid distribution parameters, NaN, the model's own exception) is reported as what it
    is. ``what`` names the model where it was run on ``n`` draws before any fit (then no fit is to blame)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    invalid = "constraint" in str(exc) or first.startswith("Expected parameter")   # torch's invalid-argument error
    if what is not None and (invalid or not any(w in first.lower() for w in _SHAPE_WORDS)):
        return ValueError(f"{what}: evaluating it on {n} draws at once failed: {type(exc).__name__}: {first}")
    if "allocate" in first.lower():
        return VectorizationError(
            f"the model asked for more memory than there is when evaluated on {n} draws at once (a particle plate "
            f"at dim {-(nesting + 1)}): its shapes broadcast the draws against each other instead of along the "
            "particle dim, e.g. X @ beta or beta.unsqueeze(-1) on a vector latent (write (X * beta).sum(-1)); "
            f"torch said: {first}")
    if not any(w in first.lower() for w in _SHAPE_WORDS) or invalid:
        return ValueError(f"evaluating the model on draws of the posterior approximation failed: {first} (a guide "
                          "whose parameters ran away gives this: try a smaller learning rate, --lr)")
    return VectorizationError(
        f"the model could not be evaluated on {n} draws at once (a particle plate at dim {-(nesting + 1)}): "
        "write it so that latent values may carry extra batch dims on the left, e.g. (X * beta).sum(-1) "
        f"instead of X @ beta, and put data-sized sites in pyro.plate; the error was: {first}")


def _collect(model_trace, sites: ModelSites, n: int, out: dict[str, dict[str, list]], keep: int | None = None,
             latent: bool = False, log_likelihood: bool = True) -> None:
    """Append the first ``keep`` of ``n`` draws of each site of ``model_trace`` to ``out[group][site]``
    (the observed sites' pointwise log-likelihood only with ``log_likelihood``)."""
    keep = n if keep is None else keep
    groups = [("deterministic", name, model_trace.nodes[name]["value"], sites.deterministic[name])
              for name in sites.deterministic]
    if latent:
        groups += [("latent", name, model_trace.nodes[name]["value"], s.shape) for name, s in sites.latent.items()]
    for name, obs in (sites.observed.items() if log_likelihood else ()):
        site = model_trace.nodes[name]
        lp = site["log_prob"] if "log_prob" in site else site["fn"].log_prob(site["value"])
        groups.append(("log_likelihood", name, lp, obs.shape[:obs.dim() - len(site["fn"].event_shape)]))
    for group, name, value, shape in groups:
        out[group].setdefault(name, []).append(_strip(value, n, tuple(shape), name)[:keep])


def conditioned_trace(model, sites: ModelSites, values: Mapping[str, torch.Tensor], n: int, *args, **kwargs):
    """Trace ``model`` conditioned on ``n`` values of every latent site at once (``{site: (n, *shape)}``),
    inside a particle plate at ``dim = -(max_plate_nesting + 1)``; each value is laid out as
    ``(n, 1, ..., 1, *shape)`` so its batch dims line up with the model's plates."""
    nesting = sites.max_plate_nesting
    data = {}
    for name, s in sites.latent.items():
        pad = max(nesting - len(s.batch_shape), 0)
        data[name] = values[name].reshape((n,) + (1,) * pad + tuple(s.shape))
    with pyro.plate("_draws", n, dim=-(nesting + 1)):
        return poutine.trace(poutine.condition(model, data=data)).get_trace(*args, **kwargs)


def _numpy(parts: dict[str, list]) -> dict[str, np.ndarray]:
    return {k: torch.cat(v).detach().to(torch.float64).cpu().numpy() for k, v in parts.items()}


def fit_chunk(chunk: int, sites: ModelSites, what: str) -> int:
    """``chunk`` draws, fewer where one chunk's traces (every latent, deterministic and observed value, with
    the model's intermediate tensors: :data:`svilab.memory.SVI_FLOATS_PER_VALUE` floats each) would not fit
    svilab's memory budget; a ValueError naming the amount when not even 2 draws fit. The draws do not
    depend on the chunk for models small enough to use the default (almost all); a model whose chunk the
    budget shrinks gets other (equally valid) random draws."""
    from svilab.memory import SVI_FLOATS_PER_VALUE, memory_budget

    values = sites.values_per_draw()
    per_draw = SVI_FLOATS_PER_VALUE * 8 * max(values, 1)
    fits = memory_budget() // per_draw
    if fits < 2:
        check_memory(2 * per_draw, f"{what}: the model evaluated on 2 draws at once ({values:,} latent, "
                                   "deterministic and observed values per draw)")
    return int(max(2, min(chunk, fits)))


def _chunks(total: int, chunk: int):
    start = 0
    while start < total:
        n = min(chunk, total - start)
        yield start, n
        start += n


def draws_bytes(num_samples: int, sites: ModelSites, log_likelihood: bool = True, keep: bool = True) -> int:
    """Bytes :func:`guide_draws` holds for ``num_samples`` draws: the kept values (latent, deterministic and,
    with ``log_likelihood``, one per observation: :meth:`ModelSites.values_per_draw`), the log weights and
    the copies Pareto smoothing makes of them."""
    per_draw = 8 * sites.values_per_draw(log_likelihood) if keep else 0
    return int(num_samples) * (per_draw + 6 * 8)


def guide_draws(model, guide, *args, num_samples: int = 4000, chunk: int = DEFAULT_CHUNK, seed: int | None = None,
                sites: ModelSites | None = None, keep: bool = True, model_kwargs: dict | None = None,
                log_likelihood: bool = True, **kwargs) -> Draws:
    """``num_samples`` draws from ``guide`` with the model's deterministic sites, pointwise
    log-likelihood and the importance log-weights (see the module docstring).

    :param keep: False keeps only the log-weights (``latent`` etc. empty), for large ELBO samples.
    :param log_likelihood: keep the pointwise log-likelihood (draws x observations numbers: leave it out
        for data too large to hold it; the memory check names the amount).
    :param model_kwargs: model keyword arguments named like an option here (``seed``, ``chunk``, ...);
        the other keywords go to the model too.
    """
    kwargs = merge_model_kwargs(kwargs, model_kwargs, "guide_draws")
    num_samples = positive_int(num_samples, "num_samples")
    chunk = max(2, positive_int(chunk, "chunk"))
    sites = sites or model_sites(model, *args, **kwargs)
    check_memory(draws_bytes(num_samples, sites, log_likelihood, keep), f"{num_samples} draws of the guide" + (
        " with the pointwise log-likelihood of every observation (leave it out: --no-log-likelihood)"
        if keep and log_likelihood and sites.observed else ""))
    chunk = fit_chunk(chunk, sites, f"{num_samples} draws of the guide")
    if seed is not None:
        pyro.set_rng_seed(seed)
    out = {"latent": {}, "deterministic": {}, "log_likelihood": {}}
    log_w = []
    with torch.no_grad():
        for _, n in _chunks(num_samples, chunk):
            m = max(n, 2)  # Pyro returns a scalar weight for a single draw
            try:
                w, model_trace, guide_trace = vectorized_importance_weights(
                    model, guide, *args, num_samples=m, max_plate_nesting=sites.max_plate_nesting, **kwargs)
            except VectorizationError:
                raise
            except (RuntimeError, ValueError, IndexError) as exc:
                raise vectorization_error(exc, m, sites.max_plate_nesting) from exc
            log_w.append(w[:n].detach().double())
            if keep:
                _collect(model_trace, sites, m, out, keep=n, latent=True, log_likelihood=log_likelihood)
    return Draws(_numpy(out["latent"]), _numpy(out["deterministic"]), _numpy(out["log_likelihood"]),
                 torch.cat(log_w).numpy())


def replay_draws(model, samples: Mapping[str, np.ndarray | torch.Tensor], *args, chunk: int = DEFAULT_CHUNK,
                 sites: ModelSites | None = None, **kwargs) -> Draws:
    """The model conditioned on given latent draws (``{site: (S, *site_shape)}``, e.g. NUTS samples):
    their deterministic sites and pointwise log-likelihood."""
    sites = sites or model_sites(model, *args, **kwargs)
    missing = set(sites.latent) - set(samples)
    if missing:
        raise ValueError(f"draws are missing latent sites {sorted(missing)}")
    nesting = sites.max_plate_nesting
    tensors = {k: torch.as_tensor(np.asarray(samples[k])) for k in sites.latent}
    total = len(next(iter(tensors.values())))
    chunk = fit_chunk(positive_int(chunk, "chunk"), sites, f"{total} draws replayed through the model")
    out = {"latent": {}, "deterministic": {}, "log_likelihood": {}}
    with torch.no_grad():
        for start, n in _chunks(total, chunk):
            values = {name: tensors[name][start:start + n].to(s.dtype) for name, s in sites.latent.items()}
            try:
                trace = conditioned_trace(model, sites, values, n, *args, **kwargs)
                trace.compute_log_prob(site_filter=lambda name, site: name in sites.observed)
                _collect(trace, sites, n, out)
            except VectorizationError:
                raise
            except (RuntimeError, ValueError, IndexError) as exc:
                raise vectorization_error(exc, n, nesting) from exc
    latent = {k: v.detach().to(torch.float64).numpy() for k, v in tensors.items()}
    return Draws(latent, _numpy(out["deterministic"]), _numpy(out["log_likelihood"]))


def importance_log_weights(model, guide, *args, num_samples: int = 10_000, chunk: int = 50_000,
                           seed: int | None = None, sites: ModelSites | None = None, model_kwargs: dict | None = None,
                           **kwargs) -> torch.Tensor:
    r""":math:`\log p(x, z_s) - \log q(z_s)`, :math:`z_s \sim q`, ``(num_samples,)`` float64, in chunks
    (``model_kwargs``: as in :func:`guide_draws`)."""
    d = guide_draws(model, guide, *args, num_samples=num_samples, chunk=chunk, seed=seed, sites=sites, keep=False,
                    model_kwargs=model_kwargs, **kwargs)
    return torch.as_tensor(d.log_weights)


def flat_draws(arrays: Mapping[str, np.ndarray], one_based: bool = True) -> dict[str, np.ndarray]:
    """Every scalar of every site as its own ``(S,)`` array, named the way Stan and posteriordb
    name them: ``beta[1]``, ``L[2,1]`` (1-based, row-major; 0-based with ``one_based=False``)."""
    out = {}
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        shape = arr.shape[1:]
        flat = arr.reshape(arr.shape[0], -1)
        if not shape:
            out[name] = flat[:, 0]
            continue
        for j, idx in enumerate(np.ndindex(*shape)):
            out[f"{name}[{','.join(str(i + one_based) for i in idx)}]"] = flat[:, j]
    return out


__all__ = ["Draws", "VectorizationError", "conditioned_trace", "draws_bytes", "fit_chunk", "flat_draws", "guide_draws",
           "importance_log_weights", "replay_draws", "vectorization_error"]
