r"""Pyro's JIT-compiled ELBOs, fixed: :class:`JitTraceMeanField_ELBO` compiles once and
:class:`JitTrace_ELBO` gives the right gradient.

``pyro.infer.JitTraceMeanField_ELBO`` (Pyro 1.9) looks for its compiled function under
``_loss_and_surrogate_loss`` but stores it under ``_differentiable_loss``, so it builds a new
:func:`pyro.ops.jit.trace` closure, and traces the model again, on *every* call: 7-8x slower than
the eager ELBO, with a cache that grows every step. This subclass keeps one compiled function per
(model, guide) pair and calls it; the compiled function itself is Pyro's, unchanged (a
``torch.jit.trace`` of the ELBO with the parameters as inputs, re-traced for new argument shapes).

``pyro.infer.JitTrace_ELBO.differentiable_loss`` (Pyro 1.9) returns ``loss + (surrogate -
surrogate.detach())`` where its compiled ``loss`` is not detached, so for reparameterized sites the
gradient is *twice* the ELBO's (its ``loss_and_grads`` is right: it differentiates the surrogate
only). Adam hides a constant factor, which is how it went unnoticed; a gradient clip or SGD does
not. :class:`JitTrace_ELBO` detaches the value; ``tests/test_jit.py`` checks both against the
eager ELBOs and finite differences.

The cache key is the (model, guide) pair, as in Pyro, with one difference: a bound method is
keyed by its function and its object (``vae.model`` is a new bound-method object each time it is
read, which in Pyro's key would compile again, and keep the old graph alive, on every call).
"""

from __future__ import annotations

import contextlib
import warnings

import pyro
import pyro.infer
import pyro.util
import torch


@contextlib.contextmanager
def quiet_tracing():
    """Silence what tracing the ELBO is expected to say: torch's TracerWarnings (a Python value read
    off a tensor is frozen into the graph: Pyro's models do this by design) and torch 2.x's
    deprecation notice for ``torch.jit.trace``. Other warnings pass."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*torch.jit.trace.* is deprecated")
        yield


class _DirectCall:
    """The traced graph of a :class:`pyro.ops.jit.CompiledFunction`, called with its parameter
    tensors cached: what ``CompiledFunction.__call__`` does after the first call, without looking
    every parameter up through Pyro's effect stack (18 lookups per VAE step, 0.1 ms) and without
    its parameter-capture trace.

    Valid while the call has the signature the graph was traced for (as many positional arguments,
    the same keyword arguments: Pyro's own cache key) and the param store holds the same tensors
    (``ParamStoreDict.named_parameters``, checked on every call); else the caller takes Pyro's path
    and builds a new one. The graph is :attr:`CompiledFunction.compiled` when it holds one
    signature (the usual case: one compiled function per (model, guide) pair here); the parameter
    order is Pyro's ``_param_names``, the one private attribute read (the tests comparing the JIT
    with the eager ELBO step for step would fail if it changed)."""

    def __init__(self, compiled_fn, args, kwargs) -> None:
        graphs = list(compiled_fn.compiled.values())
        self.graph = graphs[0] if len(graphs) == 1 else None
        self.nargs, self.kwargs = len(args), dict(kwargs)
        self.names = list(compiled_fn._param_names or [])
        self.store = pyro.get_param_store()
        self.params = [pyro.param(n).unconstrained() for n in self.names]

    def valid(self, args, kwargs) -> bool:
        if self.graph is None or len(args) != self.nargs or kwargs != self.kwargs:
            return False
        current = dict(self.store.named_parameters())     # name -> unconstrained tensor
        return all(current.get(n) is p for n, p in zip(self.names, self.params, strict=True))

    def __call__(self, args):
        return self.graph(*self.params, *args)


def _key(model, guide) -> tuple:
    """The cache key of a (model, guide) pair: ``id`` of each callable, a bound method by
    ``(id(function), id(object))`` so that reading ``obj.method`` again finds the same entry."""

    def one(fn):
        return (id(fn.__func__), id(fn.__self__)) if hasattr(fn, "__self__") and hasattr(fn, "__func__") else id(fn)

    return one(model), one(guide)


class _CompiledPerPair:
    """One of Pyro's compiled functions per (model, guide) pair (:func:`_key`), called directly after
    its first call (:class:`_DirectCall`). ``_compiled_attr`` names the attribute where the Pyro class
    keeps its compiled function; the model and guide are kept alive with it, so ids stay unique."""

    _compiled_attr: str

    def _compiled_call(self, build, model, guide, args, kwargs):
        """``build(model, guide, *args, **kwargs)`` (the Pyro method, which compiles and stores under
        ``_compiled_attr``) on a pair's first call; afterwards its compiled function, called directly."""
        compiled = self.__dict__.setdefault("_compiled_losses", {})
        key = _key(model, guide)
        if key not in compiled:
            setattr(self, self._compiled_attr, None)             # make Pyro build a new one for this pair
            with quiet_tracing():
                out = build(model, guide, *args, **kwargs)
            compiled[key] = [getattr(self, self._compiled_attr), model, guide, None]
            return out
        fn, model0, guide0, direct = compiled[key]
        kwargs["_pyro_model_id"], kwargs["_pyro_guide_id"] = id(model0), id(guide0)   # the ids it was traced with
        if direct is None or not direct.valid(args, kwargs):
            with quiet_tracing():
                out = fn(*args, **kwargs)                  # Pyro's path (also re-traces for new kwargs)
            compiled[key][3] = _DirectCall(fn, args, kwargs)
            return out
        return direct(args)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_compiled_losses", None)
        state.pop(self._compiled_attr, None)
        return state


class JitTraceMeanField_ELBO(_CompiledPerPair, pyro.infer.JitTraceMeanField_ELBO):
    """:class:`pyro.infer.JitTraceMeanField_ELBO` that compiles once per (model, guide) pair."""

    _compiled_attr = "_differentiable_loss"

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return self._compiled_call(super().differentiable_loss, model, guide, args, kwargs)


class JitTrace_ELBO(_CompiledPerPair, pyro.infer.JitTrace_ELBO):
    """:class:`pyro.infer.JitTrace_ELBO` whose ``differentiable_loss`` has the ELBO's gradient,
    compiled per (model, guide) pair and called directly after the first call."""

    _compiled_attr = "_loss_and_surrogate_loss"

    def loss_and_surrogate_loss(self, model, guide, *args, **kwargs):
        """Pyro's ``(loss, surrogate loss)``, from the pair's one compiled function."""
        return self._compiled_call(super().loss_and_surrogate_loss, model, guide, args, kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss, surrogate_loss = self.loss_and_surrogate_loss(model, guide, *args, **kwargs)
        return loss.detach() + (surrogate_loss - surrogate_loss.detach())


def compile_quietly(loss_fn, model, guide, *args, **kwargs) -> None:
    """Compile a JIT ELBO for ``(model, guide)`` and put every random number generator back.

    Compiling runs the model and guide several times (Pyro's parameter capture, then the trace),
    which draws random numbers that an eager step would not. Compiling first with the generators
    restored makes the JIT run draw exactly what the eager run draws: the same numbers, step for
    step, and a resumed run that compiles again continues exactly (tested in ``tests/test_jit.py``).
    """
    state = pyro.util.get_rng_state()
    try:
        with quiet_tracing():
            loss_fn.differentiable_loss(model, guide, *args, **kwargs)
    finally:
        pyro.util.set_rng_state(state)


__all__ = ["JitTraceMeanField_ELBO", "JitTrace_ELBO", "compile_quietly", "quiet_tracing"]
