"""One training iteration of each model family, as named steps over one shared forward pass.

The VAE-GAN iteration runs each network forward once per source (the decoder on posterior
and prior latents, the discriminator on real, reconstructed and prior images, so batch-norm
statistics stay per source) and then routes each loss to the network that learns from it:

    discriminator  <- GAN loss (+ R1 penalty)              (discriminator_step)
    encoder        <- beta * KL + rec                      (generator_step)
    decoder        <- gamma * rec + w_adv * GAN loss       (generator_step)

where rec is the Dis_l feature loss plus ``loss.pixel_weight`` times the pixel likelihood.

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

from . import augment, losses
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
    fake_inputs: list[torch.Tensor]  # what the discriminator read for x_rec (and x_prior), before augmentation
    real_input: torch.Tensor  # what the discriminator read for x, before augmentation (requires grad for R1)


def vaegan_forward(encoder, decoder, discriminator, x: torch.Tensor, eps: torch.Tensor, z_prior: torch.Tensor,
                   fake_sources: str, detach_fakes: bool = False, augment_params: dict | None = None,
                   r1: bool = False) -> Forward:
    """Run the three networks, one call per source. eps, z_prior: (B, D) standard normal noise.

    One call per source rather than one stacked batch: autograd prunes by graph, and a slice of
    a concatenation reaches everything concatenated with it, so a stacked batch makes every
    backward cross every source. With ``detach_fakes`` the discriminator reads the fakes as
    leaves of their own (``fake_inputs``) and no gradient flows from it into the decoder.
    ``augment_params`` (see :mod:`vaegan.augment`) transform every image the discriminator reads,
    the same transform for each source at one batch index. ``r1``: the real images are read as a
    leaf that requires grad, for the R1 penalty.
    """
    posterior = encoder(x)
    fakes = [decoder(posterior.sample(eps))]
    if fake_sources in ("prior", "both"):
        fakes.append(decoder(z_prior))
    inputs = [f.detach().to(x.dtype).requires_grad_() if detach_fakes else f.to(x.dtype) for f in fakes]
    dis = (lambda img: discriminator(augment.apply(img, augment_params))) if augment_params else discriminator
    real = x.detach().requires_grad_() if r1 else x
    logits_real, features_real = dis(real)
    logits_rec, features_rec = dis(inputs[0])
    logits = {"recon": [logits_rec]}
    if len(inputs) > 1:
        logits_prior, _ = dis(inputs[1])
        logits.update(prior=[logits_prior], both=[logits_rec, logits_prior])
    return Forward(
        x=x, posterior=posterior, x_rec=fakes[0], x_prior=fakes[1] if len(fakes) > 1 else None,
        logits_real=logits_real, logits_fake=torch.cat(logits[fake_sources]),
        features_real=features_real, features_rec=features_rec, fake_inputs=inputs, real_input=real,
    )


def discriminator_loss(fwd: Forward, cfg: LossConfig, r1_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """The GAN loss, plus ``r1_weight`` times the R1 penalty when the forward ran with ``r1``."""
    d = losses.d_loss(fwd.logits_real, fwd.logits_fake, cfg.adversarial)
    extra = {}
    if r1_weight > 0:
        extra["dis/r1"] = losses.r1_penalty(fwd.logits_real, fwd.real_input)
        d = d + r1_weight * extra["dis/r1"]
    bce_real, bce_fake = losses.bce_real_fake(fwd.logits_real.detach(), fwd.logits_fake.detach())
    return {
        **extra,
        "loss/dis": d,
        "dis/bce_real": bce_real,
        "dis/bce_fake": bce_fake,
        "dis/acc_real": (fwd.logits_real.detach() > 0).float().mean(),
        "dis/acc_fake": (fwd.logits_fake.detach() < 0).float().mean(),
        "dis/logit_real": fwd.logits_real.detach().float().mean(),
        "dis/logit_fake": fwd.logits_fake.detach().float().mean(),
    }


def generator_losses(fwd: Forward, cfg: LossConfig, kl_weight: float) -> dict[str, torch.Tensor]:
    """Encoder and decoder objectives before the adversarial weight is applied.

    loss/rec, the reconstruction term both learn from, is Dis_l plus ``cfg.pixel_weight`` times
    the pixel likelihood of the (unaugmented) reconstruction the discriminator read."""
    kl = losses.kl_loss(fwd.posterior)
    feat = losses.feature_loss(fwd.features_rec, fwd.features_real)
    adv = losses.g_loss(fwd.logits_fake, cfg.adversarial)
    logs = {"loss/kl": kl, "loss/dis_l": feat, "loss/rec": feat, "loss/gan": adv, "weight/kl": torch.tensor(kl_weight)}
    if cfg.pixel_weight > 0:
        logs["loss/pixel"] = losses.pixel_loss(fwd.fake_inputs[0], fwd.x, cfg.recon)
        logs["loss/rec"] = feat + cfg.pixel_weight * logs["loss/pixel"]
    return logs


def vae_losses(posterior: DiagonalGaussian, x_rec: torch.Tensor, x: torch.Tensor, cfg: LossConfig,
               kl_weight: float) -> dict[str, torch.Tensor]:
    kl = losses.kl_loss(posterior)
    rec = losses.pixel_loss(x_rec, x, cfg.recon)
    return {"loss/total": rec + kl_weight * kl, "loss/kl": kl, "loss/recon": rec,
            "weight/kl": torch.tensor(kl_weight)}
