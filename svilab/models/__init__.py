"""Pyro models shipped with svilab."""

from svilab.models.poisson_gamma import DEFAULT_DATA, PoissonGamma

__all__ = ["DEFAULT_DATA", "PoissonGamma"]
