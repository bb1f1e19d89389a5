"""Which losses each command offers, and which estimator of an objective it picks: the commands' choice
over the loss registry (:data:`svilab.inference.losses.LOSS_SPECS`, which knows only the concepts).

``svilab posterior`` offers two estimators of the ELBO by their own names (``trace_elbo``, Monte Carlo
throughout, its default; ``meanfield_elbo``, analytic KL) and ``renyi``; ``svilab vae`` offers one estimator
per objective and names it by the objective (``elbo`` is the analytic-KL ``meanfield_elbo``), with
``renyi``, ``iwae``, ``gjs`` and ``dgjs``. Both report the ELBO as the ELBO.
"""

from __future__ import annotations

from svilab.inference.losses import LOSS_SPECS, LossSpec, loss_name
from svilab.validation import choice

#: command -> the losses it offers, in order (the first estimator of each objective is its default)
COMMAND_LOSSES: dict[str, tuple[str, ...]] = {
    "posterior": ("trace_elbo", "meanfield_elbo", "renyi"),
    "vae": ("meanfield_elbo", "renyi", "iwae", "gjs", "dgjs"),
}


def _offered(command: str) -> list[LossSpec]:
    return [LOSS_SPECS[n] for n in COMMAND_LOSSES[command]]


def command_losses(command: str) -> list[str]:
    """The losses a command offers, by the name it uses for them: the objective's name where the
    command offers one estimator of that objective (the VAE's ``elbo``), else each loss's own name
    (``svilab posterior`` offers two estimators of the ELBO, ``trace_elbo`` and ``meanfield_elbo``)."""
    offered = _offered(command)
    count = {o: sum(s.objective == o for s in offered) for o in {s.objective for s in offered}}
    return list(dict.fromkeys(s.objective if count[s.objective] == 1 else s.name for s in offered))


def _default_for(command: str, objective: str) -> LossSpec | None:
    return next((s for s in _offered(command) if s.objective == objective), None)


def command_loss(name: str, command: str) -> LossSpec:
    """The loss ``name`` stands for in ``command``. An objective's name (``elbo``) picks the command's
    default estimator of it, and so does a loss the command does not offer whose objective it trains
    with another estimator (``trace_elbo`` in the VAE is its analytic-KL ``meanfield_elbo``); a
    ValueError names the losses the command offers."""
    key = str(name).lower()
    by_objective = _default_for(command, key)
    if by_objective is not None:
        return by_objective
    offered = command_losses(command)
    try:
        spec = LOSS_SPECS[loss_name(key)]
    except ValueError:
        choice(name, offered, "loss")
        raise
    if spec.name in COMMAND_LOSSES[command]:
        return spec
    other = _default_for(command, spec.objective)
    if other is not None:
        return other
    where = " and ".join({"vae": "the VAE"}.get(c, f"svilab {c}") for c, names in COMMAND_LOSSES.items()
                         if spec.name in names)
    raise ValueError(f"loss {name!r} is for {where}; svilab {command} takes: {', '.join(offered)}")


__all__ = ["COMMAND_LOSSES", "command_loss", "command_losses"]
