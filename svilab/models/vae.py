r"""A variational autoencoder for MNIST as a Pyro model/guide pair.

.. math::

    z_n \sim \mathcal N(0, I_K), \qquad x_n \mid z_n \sim p_\theta(x \mid z_n) \quad (n \text{ in a
    } \texttt{pyro.plate} \text{ over the batch}),

    q_\phi(z_n \mid x_n) = \mathcal N\big(\mu_\phi(x_n), \mathrm{diag}\,\sigma_\phi(x_n)^2\big),

with a Bernoulli likelihood on binarized pixels (logits from the decoder) or a Gaussian one with a
fixed :math:`\sigma` on pixel intensities (the exercise notebook's choice). Encoder and decoder are
MLPs with ReLU hidden layers; the encoder's scale goes through a sigmoid (notebook) or a softplus.

Presets (:data:`PRESETS`): ``notebook`` (K=5, hidden 20-20, separate location and scale encoder
networks as in the notebook, Gaussian sigma 0.1, sigmoid scale, batch 50, Adam 1e-3) and
``standard`` (K=50, hidden 400-400 with one shared encoder, Bernoulli on dynamically binarized
pixels, softplus scale, batch 100, Adam 1e-3).

Shapes: ``model(x)`` and ``guide(x)`` take ``x`` of shape ``(B, 784)``; latent site ``"z"`` has
``event_shape (K,)``, observed site ``"x"`` ``event_shape (784,)``, both in ``pyro.plate("data", B)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from svilab.validation import choice, positive, positive_int


@dataclass(frozen=True)
class VAEConfig:
    latent_dim: int = 5
    hidden: tuple[int, ...] = (20, 20)
    likelihood: str = "gaussian"          # "gaussian" (fixed sigma) or "bernoulli"
    sigma: float = 0.1                    # Gaussian likelihood scale
    encoder_scale: str = "sigmoid"        # "sigmoid" or "softplus"
    batch_size: int = 50
    lr: float = 1e-3
    binarize: bool = False                # dynamic binarization of the training pixels
    shared_encoder: bool = False          # one MLP for (loc, scale); False: two MLPs (the notebook's)

    def validated(self) -> VAEConfig:
        """This configuration, every field checked (a ValueError names the first bad one)."""
        positive_int(self.latent_dim, "latent_dim")
        for h in self.hidden:
            positive_int(h, "hidden size")
        choice(self.likelihood, ["gaussian", "bernoulli"], "likelihood")
        choice(self.encoder_scale, ["sigmoid", "softplus"], "encoder scale")
        positive(self.sigma, "sigma")
        positive_int(self.batch_size, "batch_size")
        positive(self.lr, "lr")
        if self.likelihood == "bernoulli" and not self.binarize:
            raise ValueError("the Bernoulli likelihood needs binarized pixels (binarize=True)")
        return self

    def parameter_count(self, image_size: int = 784) -> int:
        """The networks' number of weights, from the sizes alone (nothing is built)."""
        def mlp(sizes):
            return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))

        k, h = self.latent_dim, list(self.hidden)
        encoder = (mlp([image_size, *h, 2 * k]) if self.shared_encoder else 2 * mlp([image_size, *h, k]))
        return encoder + mlp([k, *h[::-1], image_size])

    def memory_bytes(self, particles: int = 1, image_size: int = 784) -> int:
        """A bound on training memory (float32): every weight 4 times (value, gradient, Adam's two
        moments), and one batch's activations, kept for the backward pass, 4 times over (forward,
        gradient, the temporaries of the ELBO), for each particle."""
        width = image_size * 2 + 4 * self.latent_dim + 3 * sum(self.hidden)
        return 4 * (4 * self.parameter_count(image_size) + 4 * self.batch_size * particles * width)

    def as_dict(self) -> dict:
        """The fields as a JSON-ready dict (``hidden`` as a list)."""
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


PRESETS: dict[str, VAEConfig] = {
    "notebook": VAEConfig(),
    "standard": VAEConfig(latent_dim=50, hidden=(400, 400), likelihood="bernoulli", encoder_scale="softplus",
                          batch_size=100, lr=1e-3, binarize=True, shared_encoder=True),
}


def preset(name: str, **overrides) -> VAEConfig:
    """The preset ``name`` with ``overrides`` (None values ignored), validated."""
    base = PRESETS[choice(name, list(PRESETS), "preset")]
    overrides = {k: (tuple(v) if k == "hidden" else v) for k, v in overrides.items() if v is not None}
    return replace(base, **overrides).validated()


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _TwoNetEncoder(nn.Module):
    """Separate MLPs for the location and the (unconstrained) scale, as in the notebook."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.loc = _mlp(sizes)
        self.scale = _mlp(sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.loc(x), self.scale(x)], dim=-1)


class VAE(PyroModule):
    """The VAE; ``model``/``guide`` are the Pyro pair, ``encode``/``decode`` the networks."""

    def __init__(self, config: VAEConfig = PRESETS["notebook"], image_size: int = 784) -> None:
        super().__init__()
        self.config = config.validated()
        self.image_size = image_size
        k, hidden = config.latent_dim, list(config.hidden)
        self.encoder = (_mlp([image_size, *hidden, 2 * k]) if config.shared_encoder
                        else _TwoNetEncoder([image_size, *hidden, k]))
        self.decoder = _mlp([k, *hidden[::-1], image_size])

    # ---------------------------------------------------------------- networks
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)`` of q(z | x), each ``(B, K)``."""
        h = self.encoder(x)
        loc, raw = h.chunk(2, dim=-1)
        scale = torch.sigmoid(raw) if self.config.encoder_scale == "sigmoid" else nn.functional.softplus(raw) + 1e-4
        return loc, scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits or Gaussian means of p(x | z), ``(..., 784)``."""
        return self.decoder(z)

    def likelihood(self, out: torch.Tensor) -> dist.Distribution:
        """p(x | z) from the decoder output: Bernoulli(logits) or Normal(mean, sigma), event shape ``(784,)``."""
        if self.config.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        return dist.Normal(out, self.config.sigma).to_event(1)

    def prior(self, batch: int, dtype=torch.float32, device=None) -> dist.Distribution:
        r""":math:`p(z) = \mathcal N(0, I_K)` for ``batch`` images (event shape ``(K,)``), in the dtype and on
        the device of the tensors it goes with: the one definition of the prior, used by the model and by the
        evaluation."""
        k = self.config.latent_dim
        zeros = torch.zeros(batch, k, dtype=dtype, device=device)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        r"""The encoder's :math:`q(z \mid x) = \mathcal N(\mathrm{loc}(x), \mathrm{diag\,scale}(x)^2)`
        (event shape ``(K,)``), used by the guide and by the evaluation."""
        loc, scale = self.encode(x)
        return dist.Normal(loc, scale).to_event(1)

    def mean_image(self, out: torch.Tensor) -> torch.Tensor:
        """E[x | z] from the decoder output (probabilities or means)."""
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out

    # ---------------------------------------------------------------- Pyro pair
    def model(self, x: torch.Tensor) -> None:
        """The Pyro model: z ~ N(0, I_K) and x ~ p(x | z) for each image of ``x`` ``(B, 784)`` in the plate
        ``data``; the decoder's weights are Pyro parameters."""
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior(x.shape[0], x.dtype, x.device))
            pyro.sample("x", self.likelihood(self.decode(z)), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """The Pyro guide: z ~ q(z | x) = N(loc(x), diag scale(x)^2) per image (:meth:`posterior`). The
        encoder network maps ``(B, 784)`` to ``(B, 2K)``: the first K outputs are the location, the
        last K the unconstrained scale (sigmoid or softplus + 1e-4, ``encoder_scale``); a network of
        your own put in ``vae.encoder`` must follow that layout, or write your own model/guide pair
        (:func:`svilab.train_vae` and the evaluation take any)."""
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))

    # ---------------------------------------------------------------- exact pieces for evaluation
    def log_joint_terms(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`\log p(x \mid z)` and :math:`\log p(z)` for ``z`` of shape ``(S, B, K)`` -> ``(S, B)`` each."""
        log_lik = self.likelihood(self.decode(z)).log_prob(x)
        log_prior = self.prior(z.shape[-2], z.dtype, z.device).log_prob(z)
        return log_lik, log_prior


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["PRESETS", "VAE", "VAEConfig", "count_parameters", "preset"]
