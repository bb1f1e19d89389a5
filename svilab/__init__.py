"""svilab: variational-inference experiments on top of Pyro.

Subpackages
-----------
models       Pyro models (Poisson-Gamma, MNIST VAE) with vectorized log densities.
guides       Variational families (hand-written Pyro guides and autoguide factories).
inference    Exact posterior, CAVI, gradient estimators, SVI runner, divergences, summaries.
experiments  The command-line experiments: each writes a run folder of config, results, figures.
data         Dataset loading (MNIST through torchvision).
"""

__version__ = "0.1.0"
