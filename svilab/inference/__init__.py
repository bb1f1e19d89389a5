"""Inference: exact posterior, CAVI, gradient estimators, SVI, divergences, summaries."""
