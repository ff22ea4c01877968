"""One training iteration of each model family, as named steps over one shared forward pass.

The VAE-GAN iteration runs each network forward once (the decoder over posterior and prior
latents stacked, the discriminator over real, reconstructed and prior images stacked) and
then routes each loss to the network that learns from it:

    discriminator  <- GAN loss only                        (discriminator_step)
    encoder        <- beta * KL + Dis_l feature loss       (generator_step)
    decoder        <- gamma * Dis_l + w_adv * GAN loss     (generator_step)

Routing uses ``backward(inputs=...)``, so no gradient of one loss reaches another network's
parameters. All backward passes run before any optimizer steps, so no pass sees weights that
an earlier step changed in place.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import losses
from .config import LossConfig
from .models.distributions import DiagonalGaussian


@dataclass
class Forward:
    """Everything one VAE-GAN forward pass produced; batch size B."""

    x: torch.Tensor  # (B, 3, R, R) real images in [-1, 1]
    posterior: DiagonalGaussian
    x_rec: torch.Tensor  # (B, 3, R, R)
    x_prior: torch.Tensor | None  # (B, 3, R, R) decoded prior samples, if the loss uses them
    logits_real: torch.Tensor  # (B,)
    logits_fake: torch.Tensor  # (F*B,) for the F fake sources the GAN loss uses
    features_real: torch.Tensor  # Dis_l of x
    features_rec: torch.Tensor  # Dis_l of x_rec


def vaegan_forward(encoder, decoder, discriminator, x: torch.Tensor, eps: torch.Tensor, z_prior: torch.Tensor,
                   fake_sources: str) -> Forward:
    """Run the three networks once. eps, z_prior: (B, D) standard normal noise."""
    b = x.shape[0]
    posterior = encoder(x)
    z = posterior.sample(eps)
    use_prior = fake_sources in ("prior", "both")
    latents = torch.cat([z, z_prior]) if use_prior else z
    fakes = decoder(latents, chunks=2 if use_prior else 1)
    images = torch.cat([x, fakes.to(x.dtype)])
    logits, features = discriminator(images, chunks=images.shape[0] // b)
    logits_fake = {"recon": logits[b : 2 * b], "prior": logits[2 * b :], "both": logits[b:]}[fake_sources]
    return Forward(
        x=x, posterior=posterior, x_rec=fakes[:b], x_prior=fakes[b:] if use_prior else None,
        logits_real=logits[:b], logits_fake=logits_fake,
        features_real=features[:b], features_rec=features[b : 2 * b],
    )


def discriminator_loss(fwd: Forward, cfg: LossConfig) -> dict[str, torch.Tensor]:
    d = losses.d_loss(fwd.logits_real, fwd.logits_fake, cfg.adversarial)
    bce_real, bce_fake = losses.bce_real_fake(fwd.logits_real.detach(), fwd.logits_fake.detach())
    return {
        "loss/dis": d,
        "dis/bce_real": bce_real,
        "dis/bce_fake": bce_fake,
        "dis/acc_real": (fwd.logits_real.detach() > 0).float().mean(),
        "dis/acc_fake": (fwd.logits_fake.detach() < 0).float().mean(),
        "dis/logit_real": fwd.logits_real.detach().float().mean(),
        "dis/logit_fake": fwd.logits_fake.detach().float().mean(),
    }


def generator_losses(fwd: Forward, cfg: LossConfig, kl_weight: float) -> dict[str, torch.Tensor]:
    """Encoder and decoder objectives before the adversarial weight is applied."""
    kl = losses.kl_loss(fwd.posterior)
    feat = losses.feature_loss(fwd.features_rec, fwd.features_real)
    adv = losses.g_loss(fwd.logits_fake, cfg.adversarial)
    return {"loss/kl": kl, "loss/dis_l": feat, "loss/gan": adv, "weight/kl": torch.tensor(kl_weight)}


def vae_losses(posterior: DiagonalGaussian, x_rec: torch.Tensor, x: torch.Tensor, cfg: LossConfig,
               kl_weight: float) -> dict[str, torch.Tensor]:
    kl = losses.kl_loss(posterior)
    rec = losses.pixel_loss(x_rec, x, cfg.recon)
    return {"loss/total": rec + kl_weight * kl, "loss/kl": kl, "loss/recon": rec,
            "weight/kl": torch.tensor(kl_weight)}
