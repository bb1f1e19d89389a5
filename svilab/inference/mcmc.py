"""NUTS for any Pyro model, through :class:`pyro.infer.MCMC`, with several chains.

:func:`run_nuts` returns the run (``get_samples``, ``diagnostics``) and the wall time. Chains run
one after another in this process by default (``chain_method="sequential"``: one
``MCMC(num_chains=1)`` per chain on the same kernel, so reproducible from the seed and with no
worker processes whatever the core count; :class:`SequentialChains` stacks them the way
``MCMC`` does). ``chain_method="parallel"`` is Pyro's own ``MCMC(num_chains=...)``: one process per
chain when the machine has enough cores, in sequence otherwise.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.mcmc.util import diagnostics as mcmc_diagnostics

from svilab.inference.init import make_init
from svilab.inference.sites import model_sites
from svilab.progress import ProgressLines
from svilab.validation import choice, positive, positive_int


class SequentialChains:
    """Chains run one after another, each its own :class:`pyro.infer.MCMC` with ``num_chains=1``,
    seen as one multi-chain run: ``get_samples`` and ``diagnostics`` as ``MCMC`` gives them
    (R-hat and ESS over the chains, divergences keyed ``"chain i"``)."""

    def __init__(self, runs: list[MCMC], args: tuple = (), kwargs: dict | None = None) -> None:
        self.runs = runs
        self.kernel = runs[0].kernel
        self.num_chains = len(runs)
        self.args, self.kwargs = args, dict(kwargs or {})      # the model's arguments

    def get_samples(self, num_samples=None, group_by_chain: bool = False) -> dict:
        per_chain = [r.get_samples(num_samples, group_by_chain=True) for r in self.runs]   # (1, draws, ...)
        stacked = {k: torch.cat([c[k] for c in per_chain], 0) for k in per_chain[0]}
        return stacked if group_by_chain else {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in stacked.items()}

    def diagnostics(self) -> dict:
        diag = mcmc_diagnostics(self.get_samples(group_by_chain=True))
        for i, r in enumerate(self.runs):
            for name, per in r.diagnostics().items():
                if isinstance(per, dict) and "chain 0" in per:       # per-chain statistics (divergences, ...)
                    diag.setdefault(name, {})[f"chain {i}"] = per["chain 0"]
        return diag


class TimeLimitReached(Exception):
    """Raised inside a chain's loop (by :class:`_Monitor`) when ``time_limit`` has passed."""


class _Monitor:
    """``hook_fn`` for :class:`pyro.infer.MCMC`, called after every iteration of every chain: where there is no
    progress bar (stderr not a terminal) a line at most every ``every`` seconds with the chain, the stage, the
    iteration, iterations per second, the tree depth and the divergences so far, and the time left
    (:class:`svilab.progress.ProgressLines`); with ``time_limit``, it stops the run
    (:class:`TimeLimitReached`) once that many seconds have passed, keeping the first chain's draws as it goes
    (unconstrained, as the kernel holds them) so that a run stopped in its first chain still has them."""

    def __init__(self, num_chains: int, warmup: int, samples: int, lines: bool, time_limit: float | None,
                 every: float = 15.0) -> None:
        self.lines = ProgressLines(num_chains * (warmup + samples), every) if lines else None
        self.per_chain, self.warmup, self.num_chains = warmup + samples, warmup, num_chains
        self.time_limit = time_limit
        self.chain, self.done, self.t0 = 0, 0, time.perf_counter()
        self.partial: list[dict] = []           # the current chain's kept draws (unconstrained)
        self.stage, self.step = "warmup", 0

    def next_chain(self) -> None:
        self.chain += 1
        self.partial = []

    def __call__(self, kernel, params, stage, i) -> None:
        self.done += 1
        sampling = not stage.startswith("Warmup")
        self.step = i + 1 if not sampling else self.warmup + i + 1
        self.stage = "sampling" if sampling else "warmup"
        if sampling and self.time_limit is not None and self.chain == 1:    # kept only if no chain finishes
            self.partial.append({k: v.detach().clone() for k, v in params.items()})
        elapsed = time.perf_counter() - self.t0
        if self.lines is not None:        # the text is made only when a line is due
            self.lines.update(self.done, lambda: f"NUTS chain {self.chain}/{self.num_chains}: {self.stage} "
                                                 f"{self.step}/{self.per_chain}, {self.done / max(elapsed, 1e-9):.1f} "
                                                 f"it/s, {_depth_text(kernel)}")
        if self.time_limit is not None and elapsed > self.time_limit:
            raise TimeLimitReached()


def _depth_text(kernel) -> str:
    """The kernel's tree depth so far (this iteration's, the chain's largest, how often at the maximum) and
    its divergences, for progress lines."""
    stats = getattr(kernel, "chain_stats", None)
    if not stats:
        return ""
    return (f"tree depth {stats['depth']} (max {stats['max_depth']}, {stats['depth_hits']} of {stats['iterations']} "
            f"iterations at the limit {kernel._max_tree_depth}), {len(kernel._divergences)} divergences")


class _CountingNUTS(NUTS):
    """NUTS that counts its leapfrog steps, one gradient of the log density each (``gradient_evals``, the cost
    measure the VI literature compares methods by): Pyro's ``_build_basetree`` takes one step per call.

    Per chain it also keeps ``chain_stats``: the last iteration's tree depth (``steps.bit_length()``: a tree
    of depth d takes between :math:`2^{d-1}` and :math:`2^d - 1` leapfrog steps), the largest so far, and how
    many iterations reached ``max_tree_depth`` (Stan's warning: such a chain moves by random walk, the usual
    sign of a badly scaled posterior); Pyro's progress bar shows them through :meth:`logging`."""

    gradient_evals = 0

    def _build_basetree(self, *args, **kwargs):
        self.gradient_evals += 1
        return super()._build_basetree(*args, **kwargs)

    def setup(self, warmup_steps, *args, **kwargs):
        self.chain_stats = {"depth": 0, "max_depth": 0, "depth_hits": 0, "iterations": 0,
                            "sample_iterations": 0, "sample_depth_hits": 0}
        return super().setup(warmup_steps, *args, **kwargs)

    def sample(self, params):
        before = self.gradient_evals
        out = super().sample(params)
        depth = (self.gradient_evals - before).bit_length()
        st = self.chain_stats
        hit = depth >= self._max_tree_depth
        st["depth"], st["max_depth"] = depth, max(st["max_depth"], depth)
        st["iterations"] += 1
        st["depth_hits"] += hit
        if self._t > self._warmup_steps:                        # Pyro's step counter, after this iteration
            st["sample_iterations"] += 1
            st["sample_depth_hits"] += hit
        return out

    def logging(self):
        out = super().logging()
        if getattr(self, "chain_stats", None):
            out["depth"] = str(self.chain_stats["depth"])
            out["div"] = str(len(self._divergences))
        return out


class _PartialChain:
    """One chain stopped by the time limit before its end: its kept draws, seen as a one-chain run
    (``get_samples``, ``diagnostics`` as :class:`pyro.infer.MCMC` gives them)."""

    def __init__(self, kernel, draws: list[dict], divergences: list[int], args: tuple, kwargs: dict) -> None:
        self.kernel, self.num_chains = kernel, 1
        self.args, self.kwargs = args, dict(kwargs)
        self._divergences = [d for d in divergences if d < len(draws)]
        z = {k: torch.stack([d[k] for d in draws]).unsqueeze(0) for k in draws[0]}        # (1, draws, ...)
        self._samples = {k: kernel.transforms[k].inv(v) if k in kernel.transforms else v for k, v in z.items()}

    def get_samples(self, num_samples=None, group_by_chain: bool = False) -> dict:
        s = self._samples
        return s if group_by_chain else {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in s.items()}

    def diagnostics(self) -> dict:
        diag = mcmc_diagnostics(self.get_samples(group_by_chain=True))
        diag["divergences"] = {"chain 0": self._divergences}
        return diag


class _StartedNUTS(_CountingNUTS):
    """NUTS whose dense mass matrix starts at a given covariance of the unconstrained latent vector
    (in the model's site order; Pyro keys the dense block by the sorted site names, so it is permuted
    here) instead of the identity: warm-up's first window then already moves along the posterior's
    own directions, and the adaptation windows refine it from the chain as usual."""

    def __init__(self, model, inverse_mass, order: list[tuple[str, int]], **kwargs) -> None:
        super().__init__(model, **kwargs)
        self._start_inverse_mass, self._order = inverse_mass, order

    def _initialize_adapter(self):
        super()._initialize_adapter()
        current = self._adapter.mass_matrix_adapter.inverse_mass_matrix
        key = next(k for k, v in current.items() if v.dim() == 2)
        offsets, start = {}, 0
        for name, size in self._order:
            offsets[name] = range(start, start + size)
            start += size
        perm = torch.tensor([i for name in key for i in offsets[name]])
        m = self._start_inverse_mass.to(current[key].dtype)[perm][:, perm]
        self._adapter.mass_matrix_adapter.inverse_mass_matrix = {**current, key: 0.5 * (m + m.T)}
        if self._adapter.adapt_step_size:
            # Pyro searched the first step size under the identity mass matrix: on a badly scaled posterior a
            # step far too small for this one, and warm-up's first iterations then ran to the maximum tree
            # depth (7 x 1023 leapfrog steps per chain on examples/hard/years.py) until dual averaging grew it
            self._adapter.reset_step_size_adaptation(self._initial_params)


@dataclass
class NUTSResult:
    """The finished :class:`pyro.infer.MCMC` run, its wall time, settings, and the model's arguments."""

    mcmc: MCMC | SequentialChains
    seconds: float
    config: dict
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


def run_nuts(model, *args, num_samples: int = 1000, warmup_steps: int = 500, num_chains: int = 4,
             seed: int | None = None, target_accept_prob: float = 0.8, jit_compile: bool = True, full_mass: bool = True,
             chain_method: str = "sequential", progress: bool | None = None, init: str | Callable = "uniform",
             max_plate_nesting: int | None = None, inverse_mass_matrix: torch.Tensor | None = None,
             initial_points: torch.Tensor | None = None, adapt_mass_matrix: bool = True,
             time_limit: float | None = None, max_tree_depth: int = 10, **kwargs) -> NUTSResult:
    """Sample the posterior of ``model(*args, **kwargs)`` with NUTS.

    :param num_samples: draws kept per chain; ``warmup_steps`` adaptation steps per chain before them.
    :param num_chains: number of chains (R-hat needs >= 2); each starts from its own random point.
    :param seed: ``pyro.set_rng_seed`` before sampling (None: leave the RNG).
    :param jit_compile: compile the potential energy with the PyTorch JIT (about 2x faster per
        step on small models).
    :param full_mass: adapt a dense mass matrix during warm-up; for correlated posteriors (the
        Poisson-Gamma posterior has corr(u, v) = -0.82) it more than doubles the ESS per draw.
    :param init: initial values, a name from :data:`svilab.inference.init.INIT_STRATEGIES` (default
        ``uniform``: Uniform(-2, 2) on the unconstrained scale, as Stan) or a Pyro init strategy; none
        of them samples a site, so improper priors (``dist.ImproperUniform``) work.
    :param progress: Pyro's progress bar (default: when stderr is a terminal); without it, a line on
        stderr every 15 s says which chain and iteration it is at and about how long is left.
    :param inverse_mass_matrix: the dense mass matrix's starting value, a covariance ``(D, D)`` of the
        unconstrained latent vector in the model's site order (e.g. the Laplace covariance,
        :func:`svilab.inference.laplace.laplace`); None: the identity. Needs ``full_mass``.
    :param adapt_mass_matrix: re-estimate the mass matrix from the warm-up draws (Pyro's windows); off
        keeps the starting one (``inverse_mass_matrix``), which Pyro's estimate, shrunk towards
        ``1e-3 I``, would ruin on a posterior whose scales are far below 1e-3.
    :param initial_points: ``(num_chains, D)`` starting points on the unconstrained space, in the model's
        site order (e.g. draws from the Laplace approximation: chains that start in the posterior's bulk
        need no warm-up to find it); None: ``init``.
    :param time_limit: seconds after which the run stops with what it has (checked after every iteration):
        the chains that finished, or, when it stopped in the first chain's sampling, the draws that chain had
        kept; ``config["stopped"]`` says where it stopped (None: it ran to the end). Stopped in the first
        chain's warm-up, it raises ``ValueError``. Needs ``chain_method="sequential"``.
    :param max_tree_depth: Pyro's (and Stan's) limit on the doublings of a trajectory, at most
        :math:`2^{d} - 1` leapfrog steps per iteration; iterations that reach it are counted
        (``config["tree_depth_hits"]``) and warned about by :func:`svilab.inference.diagnostics.mcmc_warnings`.
    :param max_plate_nesting: the model's plate nesting (default: read off one sample-free trace,
        :func:`svilab.inference.sites.model_sites`; Pyro's own guess would sample the model).
    :raises ValueError: num_samples < 1, num_chains < 1, warmup_steps < 0, time_limit <= 0, unknown chain_method
        or init.

    Progress: Pyro's bar per chain shows iterations per second, the step size, the acceptance rate, the
    last tree depth and the divergences so far; the lines without a terminal say the same, with the time left.
    """
    num_samples = positive_int(num_samples, "num_samples")
    num_chains = positive_int(num_chains, "num_chains")
    warmup_steps = positive_int(warmup_steps, "warmup_steps", minimum=0)
    chain_method = choice(chain_method, ["sequential", "parallel"], "chain_method")
    if progress is None:
        progress = sys.stderr.isatty()
    if seed is not None:
        pyro.set_rng_seed(seed)
    init_strategy = make_init(init) if isinstance(init, str) else init
    options = dict(target_accept_prob=target_accept_prob, jit_compile=jit_compile, ignore_jit_warnings=True,
                   max_tree_depth=positive_int(max_tree_depth, "max_tree_depth"),
                   full_mass=full_mass, init_strategy=init_strategy, adapt_mass_matrix=bool(adapt_mass_matrix))
    starts = [None] * num_chains
    sites = None
    if initial_points is not None or inverse_mass_matrix is not None or max_plate_nesting is None:
        sites = model_sites(model, *args, **kwargs)          # one sample-free trace for all of these
        max_plate_nesting = sites.max_plate_nesting if max_plate_nesting is None else max_plate_nesting
    if initial_points is not None:
        shapes = sites.unconstrained_shapes
        dim = sum(math.prod(sh) for sh in shapes.values())
        pts = torch.as_tensor(initial_points, dtype=torch.float64)
        if pts.shape != (num_chains, dim) or not torch.isfinite(pts).all():
            raise ValueError(f"initial_points must be a finite ({num_chains}, {dim}) tensor (a point of the "
                             f"unconstrained space per chain), got shape {tuple(pts.shape)}")
        if chain_method == "parallel":
            raise ValueError("initial_points needs chain_method='sequential'")
        for c in range(num_chains):
            starts[c], at = {}, 0
            for name, sh in shapes.items():
                k = math.prod(sh)
                starts[c][name] = pts[c, at:at + k].reshape(sh)
                at += k
    if inverse_mass_matrix is None:
        kernel = _CountingNUTS(model, max_plate_nesting=max_plate_nesting, **options)
    else:
        order = [(n, math.prod(sh)) for n, sh in sites.unconstrained_shapes.items()]
        dim = sum(k for _, k in order)
        m = torch.as_tensor(inverse_mass_matrix, dtype=torch.float64)
        if not full_mass:
            raise ValueError("inverse_mass_matrix needs full_mass=True (a dense mass matrix)")
        if m.shape != (dim, dim) or not torch.isfinite(m).all():
            raise ValueError(f"inverse_mass_matrix must be a finite {dim} x {dim} matrix (the model's unconstrained "
                             f"dimension), got shape {tuple(m.shape)}")
        kernel = _StartedNUTS(model, m, order, max_plate_nesting=max_plate_nesting, **options)
    chains = num_chains if chain_method == "parallel" else 1
    if time_limit is not None:
        time_limit = positive(time_limit, "time_limit")
        if chains > 1:
            raise ValueError("time_limit needs chain_method='sequential' (chains in other processes cannot be "
                             "stopped with what they have)")
    monitor = _Monitor(num_chains, warmup_steps, num_samples, not progress, time_limit) if chains == 1 else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Chains will be drawn sequentially")
        runs = [MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, num_chains=chains,
                     disable_progbar=not progress, hook_fn=monitor, initial_params=starts[c])
                for c in range(num_chains // chains)]
    t0 = time.perf_counter()
    done, stopped, hits, kept_iterations, kept_draws = [], None, 0, 0, num_samples
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.trace.*is deprecated")
        for run in runs:
            if monitor is not None:
                monitor.next_chain()
            try:
                run.run(*args, **kwargs)
            except TimeLimitReached:
                stopped = _stopped(monitor, len(done), num_chains, time.perf_counter() - t0, time_limit)
                if not done and len(monitor.partial) >= 2:      # no finished chain: the stopped one's draws
                    done.append(_PartialChain(kernel, monitor.partial, list(kernel._divergences), args, kwargs))
                    stopped["kept"] = f"the {len(monitor.partial)} draws chain 1 had kept"
                    kept_draws = kept_iterations = len(monitor.partial)
                    hits = (getattr(kernel, "chain_stats", None) or {}).get("sample_depth_hits", 0)
                break
            done.append(run)
            st = getattr(kernel, "chain_stats", None) or {}
            hits += st.get("sample_depth_hits", 0)
            kept_iterations += st.get("sample_iterations", 0)
    if not done:
        raise ValueError(f"NUTS stopped by the time limit ({time_limit:g} s) in chain 1's {stopped['stage']}, "
                         "before any draw was kept: give it more time or fewer warm-up steps")
    mcmc = done[0] if len(done) == 1 else SequentialChains(done, args, kwargs)
    kept_chains = len(done)
    return NUTSResult(mcmc, time.perf_counter() - t0,
                      {"num_samples": kept_draws,
                       "warmup_steps": warmup_steps, "num_chains": kept_chains,
                       "chains_asked": num_chains,
                       "seed": seed, "target_accept_prob": target_accept_prob, "chain_method": chain_method,
                       "mass_matrix_start": "identity" if inverse_mass_matrix is None else "given",
                       "initial_points": "init" if initial_points is None else "given",
                       "adapt_mass_matrix": bool(adapt_mass_matrix),
                       # leapfrog steps of all chains (warm-up included); None where chains ran in other processes
                       "gradient_evals": kernel.gradient_evals if chains == 1 else None,
                       "max_tree_depth": kernel._max_tree_depth,
                       # kept iterations (finished chains) whose tree reached max_tree_depth
                       "tree_depth_hits": hits if chains == 1 else None,
                       "kept_iterations": kept_iterations if chains == 1 else None,
                       "time_limit": time_limit, "stopped": stopped,
                       "init": init if isinstance(init, str) else getattr(init, "__name__", repr(init))},
                      args, kwargs)


def _stopped(monitor: _Monitor, finished: int, num_chains: int, seconds: float, time_limit: float) -> dict:
    """What the time limit left: where it stopped, and which chains are kept (the finished ones)."""
    return {"after_s": round(seconds, 1), "time_limit": time_limit, "chain": monitor.chain,
            "stage": monitor.stage, "iteration": monitor.step, "iterations_per_chain": monitor.per_chain,
            "chains_finished": finished, "chains_asked": num_chains,
            "kept": f"the {finished} finished chain{'s' if finished != 1 else ''}" if finished else "nothing"}


def stopped_text(stopped: dict) -> str:
    """One line for a run stopped by its time limit: where it stopped and what was kept."""
    return (f"stopped by the time limit ({stopped['time_limit']:g} s) after {stopped['after_s']:g} s in chain "
            f"{stopped['chain']} of {stopped['chains_asked']} ({stopped['stage']}, iteration {stopped['iteration']} of "
            f"{stopped['iterations_per_chain']}); kept {stopped['kept']}")


__all__ = ["NUTSResult", "SequentialChains", "TimeLimitReached", "run_nuts", "stopped_text"]
