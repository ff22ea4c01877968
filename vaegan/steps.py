"""One training iteration of each model family, as named steps over one shared forward pass.

The VAE-GAN iteration runs each network forward once per source (the decoder on posterior
and prior latents, the discriminator on real, reconstructed and prior images, so batch-norm
statistics stay per source) and then routes each loss to the network that learns from it:

    discriminator  <- GAN loss only                        (discriminator_step)
    encoder        <- beta * KL + Dis_l feature loss       (generator_step)
    decoder        <- gamma * Dis_l + w_adv * GAN loss     (generator_step)

The trainer has the discriminator read the fakes as detached leaves (``detach_fakes``): its
backward stops there, and the generator's gradients at the fakes are chained into the decoder
and encoder by hand, so each backward crosses only the graph its network learns through.
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
    fake_inputs: list[torch.Tensor]  # what the discriminator read for x_rec (and x_prior)


def vaegan_forward(encoder, decoder, discriminator, x: torch.Tensor, eps: torch.Tensor, z_prior: torch.Tensor,
                   fake_sources: str, detach_fakes: bool = False) -> Forward:
    """Run the three networks, one call per source. eps, z_prior: (B, D) standard normal noise.

    One call per source rather than one stacked batch: autograd prunes by graph, and a slice of
    a concatenation reaches everything concatenated with it, so a stacked batch makes every
    backward cross every source. With ``detach_fakes`` the discriminator reads the fakes as
    leaves of their own (``fake_inputs``) and no gradient flows from it into the decoder.
    """
    posterior = encoder(x)
    fakes = [decoder(posterior.sample(eps))]
    if fake_sources in ("prior", "both"):
        fakes.append(decoder(z_prior))
    inputs = [f.detach().to(x.dtype).requires_grad_() if detach_fakes else f.to(x.dtype) for f in fakes]
    logits_real, features_real = discriminator(x)
    logits_rec, features_rec = discriminator(inputs[0])
    logits = {"recon": [logits_rec]}
    if len(inputs) > 1:
        logits_prior, _ = discriminator(inputs[1])
        logits.update(prior=[logits_prior], both=[logits_rec, logits_prior])
    return Forward(
        x=x, posterior=posterior, x_rec=fakes[0], x_prior=fakes[1] if len(fakes) > 1 else None,
        logits_real=logits_real, logits_fake=torch.cat(logits[fake_sources]),
        features_real=features_real, features_rec=features_rec, fake_inputs=inputs,
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
