"""Benchmark: the exercise notebook's whole estimator workload, svilab vs a per-sample loop.

Workload (the notebook's): the ELBO table (M in 5, 10, 100, 1000; 1000 repetitions each), and the
score-function and reparameterization tables (M in 5, 10, 100, 1000, 10000; 1000 repetitions
each): 23.3 million (u, v) samples. svilab runs it in full (truncated-Normal guide, exact), in
float64 and in float32 (``--dtype float32`` of ``svilab elbo/gradients``), alternating, with one
torch thread (svilab's default; ``--threads`` to change). Beside it, in the same process, a
straightforward implementation in the notebook's style (Python loop over samples with torch
scalars, Poisson log-pmf per data point) runs a few repetitions, and its time per sample is
extrapolated to the full workload.

    python benchmarks/bench_gradients.py [--loop-reps 2] [--repeat 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from svilab.inference.estimators import Target, estimate
from svilab.models import PoissonGamma

POINT = (5.0, 0.5, 1.0, 0.2)
ELBO_MS = (5, 10, 100, 1000)
GRAD_MS = (5, 10, 100, 1000, 10000)
REPS = 1000


def svilab_workload(target, dtype=torch.float64) -> float:
    t0 = time.perf_counter()
    for M in ELBO_MS:
        estimate("elbo", target, "normal", POINT, M, REPS, seed=0, dtype=dtype)
    for name in ("score", "reparam"):
        for M in GRAD_MS:
            estimate(name, target, "normal", POINT, M, REPS, seed=0, dtype=dtype)
    return time.perf_counter() - t0


# ---- the notebook's style: a Python loop over samples (made correct, not faster) ---------------
x = torch.tensor([3, 4, 3, 9, 10, 3, 2, 3, 3, 2], dtype=torch.float64)
p_u = torch.distributions.Gamma(torch.tensor(5.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
p_v = torch.distributions.Gamma(torch.tensor(4.0, dtype=torch.float64), torch.tensor(4.0, dtype=torch.float64))
_pt = torch.tensor(POINT, dtype=torch.float64)
q_u = torch.distributions.Normal(_pt[0], _pt[1])
q_v = torch.distributions.Normal(_pt[2], _pt[3])


def _positive(q):
    s = q.sample()
    while s <= 0:
        s = q.sample()
    return s


def _log_joint(u, v):
    return torch.distributions.Poisson(u * v).log_prob(x).sum() + p_u.log_prob(u) + p_v.log_prob(v)


def loop_elbo(M):
    total = 0.0
    for _ in range(M):
        u, v = _positive(q_u), _positive(q_v)
        total += float(_log_joint(u, v) - q_u.log_prob(u) - q_v.log_prob(v))
    return total / M


def loop_score(M):
    g = torch.zeros(4, dtype=torch.float64)
    mu_u, s_u, mu_v, s_v = POINT
    for _ in range(M):
        u, v = _positive(q_u), _positive(q_v)
        w = _log_joint(u, v) - q_u.log_prob(u) - q_v.log_prob(v)
        g += w * torch.stack(((u - mu_u) / s_u**2, (u - mu_u) ** 2 / s_u**3 - 1 / s_u,
                              (v - mu_v) / s_v**2, (v - mu_v) ** 2 / s_v**3 - 1 / s_v))
    return g / M


def loop_reparam(M):
    g = torch.zeros(4, dtype=torch.float64)
    mu_u, s_u, mu_v, s_v = POINT
    S, N = float(x.sum()), len(x)
    for _ in range(M):
        e_u, e_v = torch.randn((), dtype=torch.float64), torch.randn((), dtype=torch.float64)
        u, v = mu_u + s_u * e_u, mu_v + s_v * e_v
        du = S / u - N * v + (5.0 - 1) / u - 1.0
        dv = S / v - N * u + (4.0 - 1) / v - 4.0
        g += torch.stack((du, du * e_u + 1 / s_u, dv, dv * e_v + 1 / s_v))
    return g / M


def per_sample(fn, M, reps):
    t0 = time.perf_counter()
    for _ in range(reps):
        fn(M)
    return (time.perf_counter() - t0) / (M * reps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loop-reps", type=int, default=2, help="repetitions of the loop version (M=1000)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of the svilab workload (best is kept)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    target = Target.from_poisson_gamma(PoissonGamma())
    estimate("reparam", target, "normal", POINT, 10, 10)      # warm-up
    times: dict[torch.dtype, list[float]] = {torch.float64: [], torch.float32: []}
    for _ in range(args.repeat):
        for dtype in times:
            times[dtype].append(svilab_workload(target, dtype))
    best = min(times[torch.float64])
    best32 = min(times[torch.float32])
    n_elbo = REPS * sum(ELBO_MS)
    n_grad = REPS * sum(GRAD_MS)
    c_elbo = per_sample(loop_elbo, 1000, args.loop_reps)
    c_score = per_sample(loop_score, 1000, args.loop_reps)
    c_rep = per_sample(loop_reparam, 1000, args.loop_reps)
    loop_total = n_elbo * c_elbo + n_grad * (c_score + c_rep)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"workload: {n_elbo + 2 * n_grad:,} samples (ELBO table + score and reparam tables, {REPS} reps)")
    for dtype, b in ((torch.float64, best), (torch.float32, best32)):
        print(f"svilab (vectorized, chunked, {str(dtype)[6:]}): best {b:.2f} s of {args.repeat} runs "
              f"({', '.join(f'{t:.2f}' for t in times[dtype])})")
    print(f"float32 / float64: {best32 / best:.2f}")
    print(f"per-sample Python loop, extrapolated from {args.loop_reps} x M=1000 per table: {loop_total:.0f} s "
          f"({c_elbo * 1e6:.0f} / {c_score * 1e6:.0f} / {c_rep * 1e6:.0f} us per sample for ELBO / score / reparam)")
    print(f"speed-up: {loop_total / best:.0f}x")


if __name__ == "__main__":
    main()
