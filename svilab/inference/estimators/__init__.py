"""Hand-written Monte Carlo estimators of the ELBO and its gradient, behind one interface.

========================  =====================================================  ==============
name                      what                                                    module
========================  =====================================================  ==============
``elbo``                  MC estimate of the ELBO value                           elbo.py
``score``                 score-function (REINFORCE) gradient                    score_function.py
``score_loo``             score function, leave-one-out baseline                 score_function.py
``score_cv``              score function, optimal scalar control variate          score_function.py
``reparam``               reparameterization (pathwise) gradient                 reparameterization.py
``reparam_entropy``       pathwise, closed-form entropy gradient                 reparameterization.py
``reparam_stl``           pathwise, "sticking the landing"                       reparameterization.py
``reparam_qmc``           pathwise with randomized quasi-Monte Carlo noise        reparameterization.py
========================  =====================================================  ==============

Pyro's own autodiff gradients for the same guides are in :mod:`.pyro_autodiff`.
"""

from __future__ import annotations

from svilab.inference.estimators.base import Estimator, Target, estimate, mean_and_se
from svilab.inference.estimators.elbo import ELBOEstimator
from svilab.inference.estimators.families import FAMILIES, Family, get_family
from svilab.inference.estimators.reparameterization import (
    Reparameterization,
    ReparameterizationEntropy,
    ReparameterizationQMC,
    ReparameterizationSTL,
)
from svilab.inference.estimators.score_function import (
    ScoreFunction,
    ScoreFunctionLOO,
    ScoreFunctionOptimalCV,
)
from svilab.validation import choice

ESTIMATORS: dict[str, Estimator] = {e.name: e for e in (
    ELBOEstimator(), ScoreFunction(), ScoreFunctionLOO(), ScoreFunctionOptimalCV(),
    Reparameterization(), ReparameterizationEntropy(), ReparameterizationSTL(),
    ReparameterizationQMC())}

GRADIENT_ESTIMATORS: list[str] = [n for n, e in ESTIMATORS.items() if not e.is_value]
PARAM_NAMES: tuple[str, ...] = ("mu_u", "sigma_u", "mu_v", "sigma_v")


def get_estimator(name: str | Estimator) -> Estimator:
    """The estimator called ``name`` (an :class:`Estimator` is returned as it is); a ValueError lists
    the known names."""
    if isinstance(name, Estimator):
        return name
    return ESTIMATORS[choice(name, list(ESTIMATORS), "estimator")]


def register_estimator(estimator: Estimator, *, replace: bool = False) -> Estimator:
    """Make ``estimator`` usable by its ``name`` wherever svilab takes an estimator name
    (:func:`estimate`, ``svilab gradients --estimators`` in the same process).

    :raises TypeError: not an :class:`Estimator`.
    :raises ValueError: no name, or the name is taken (and ``replace`` is False).

    >>> from svilab.inference.estimators import Reparameterization, register_estimator, get_estimator
    >>> class Mine(Reparameterization):
    ...     name = "my_reparam"
    >>> est = register_estimator(Mine())
    >>> get_estimator("my_reparam") is est
    True
    >>> del ESTIMATORS["my_reparam"]; GRADIENT_ESTIMATORS.remove("my_reparam")
    """
    if not isinstance(estimator, Estimator):
        raise TypeError(f"an estimator must be an svilab Estimator, got {type(estimator).__name__}")
    name = getattr(estimator, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError("the estimator needs a name (a class attribute `name`)")
    if name in ESTIMATORS and not replace:
        raise ValueError(f"an estimator called {name!r} exists; pass replace=True to replace it")
    ESTIMATORS[name] = estimator
    if not estimator.is_value and name not in GRADIENT_ESTIMATORS:
        GRADIENT_ESTIMATORS.append(name)
    return estimator


__all__ = ["ESTIMATORS", "FAMILIES", "GRADIENT_ESTIMATORS", "PARAM_NAMES", "Estimator", "Family",
           "Target", "estimate", "get_estimator", "get_family", "mean_and_se", "register_estimator"]
