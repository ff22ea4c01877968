"""A VAE-GAN iteration written the straightforward way, as public implementations write it.

The yardstick for ``benchmarks/bench.py`` and ``tests/test_fast_step.py``: eager float32,
contiguous tensors, and every network run once per source:

- the decoder separately on the posterior sample z and on the prior sample z_prior;
- the discriminator separately on x, x_rec and x_prior for the generator's losses, then again
  on x and the *detached* fakes for its own loss;
- one full ``backward(retain_graph=True)`` per network's loss, each filling the gradients of
  every network it reaches; the gradients a loss must not give (the adversarial and Dis_l
  terms' into the discriminator, the decoder's into the encoder) are thrown away by zeroing
  between the passes, as those implementations must to route correctly.

The losses are the toolkit's (``vaegan.training.losses``), so both steps compute the same gradients:

    encoder       <- kl_weight * KL + rec
    decoder       <- gamma * rec + w_adv * GAN  (w_adv = 1 unless given; adaptive: taming's
                                                 ratio of gradient norms at the last layer)
    discriminator <- GAN discriminator loss on real vs fakes (``fake_sources``) + R1

where rec = Dis_l + pixel_weight * pixel loss; with augmentation parameters every image the
discriminator reads is augmented (``vaegan.training.augment``).
"""
from __future__ import annotations

import torch
from torch import nn

from vaegan.config import LossConfig
from vaegan.training import augment, losses


def _take_grads(module: nn.Module) -> list[torch.Tensor | None]:
    """The module's gradients, leaving it with none."""
    grads = [p.grad for p in module.parameters()]
    module.zero_grad(set_to_none=True)
    return grads


def _put_grads(module: nn.Module, grads: list[torch.Tensor | None]) -> None:
    for p, g in zip(module.parameters(), grads):
        p.grad = g


def reference_gradients(encoder: nn.Module, decoder: nn.Module, discriminator: nn.Module, x: torch.Tensor,
                        eps: torch.Tensor, z_prior: torch.Tensor, loss_cfg: LossConfig,
                        kl_weight: float, adv_weight: float = 1.0, augment_params: dict | None = None,
                        r1_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Fill every parameter's ``.grad`` with its network's objective; returns the losses.

    x: (B, 3, R, R) in [-1, 1]; eps, z_prior: (B, D) standard normal noise. With
    ``loss_cfg.adaptive_weight`` the adversarial weight is ``adv_weight`` times the computed ratio.
    """
    nets = (encoder, decoder, discriminator)
    for net in nets:
        net.zero_grad(set_to_none=True)

    # Forward: the decoder and the discriminator once per source.
    posterior = encoder(x)
    x_rec = decoder(posterior.sample(eps))
    x_prior = decoder(z_prior)
    dis = (lambda img: discriminator(augment.apply(img, augment_params))) if augment_params else discriminator
    _, features_real = dis(x)
    logits_rec, features_rec = dis(x_rec)
    logits_prior, _ = dis(x_prior)
    fakes = {"recon": [logits_rec], "prior": [logits_prior], "both": [logits_rec, logits_prior]}
    logits_fake = torch.cat(fakes[loss_cfg.fake_sources])

    kl = losses.kl_loss(posterior)
    n = loss_cfg.feature_layers
    features = losses.feature_loss(features_rec[-n:], features_real[-n:])
    dis_l = losses.feature_loss(features_rec[-1:], features_real[-1:])
    rec = features + loss_cfg.pixel_weight * losses.pixel_loss(x_rec, x, loss_cfg.recon)
    gan = losses.g_loss(logits_fake, loss_cfg.adversarial)
    if loss_cfg.adaptive_weight and adv_weight:
        adv_weight = adv_weight * losses.adaptive_weight(loss_cfg.gamma * rec, gan, decoder.last_layer,
                                                         loss_cfg.adaptive_weight_max)

    # Encoder: KL + rec. Keep only the encoder's gradients.
    (kl_weight * kl + rec).backward(retain_graph=True)
    encoder_grads = _take_grads(encoder)
    decoder.zero_grad(set_to_none=True)
    discriminator.zero_grad(set_to_none=True)

    # Decoder: gamma * rec + w_adv * GAN. Keep only the decoder's gradients.
    (loss_cfg.gamma * rec + adv_weight * gan).backward(retain_graph=True)
    decoder_grads = _take_grads(decoder)
    encoder.zero_grad(set_to_none=True)
    discriminator.zero_grad(set_to_none=True)

    # Discriminator: a second forward on real and detached fakes.
    real = x.detach().requires_grad_(r1_weight > 0)
    logits_real, _ = dis(real)
    fake_images = {"recon": [x_rec], "prior": [x_prior], "both": [x_rec, x_prior]}[loss_cfg.fake_sources]
    logits_fake_d = torch.cat([dis(f.detach())[0] for f in fake_images])
    d_loss = losses.d_loss(logits_real, logits_fake_d, loss_cfg.adversarial)
    if r1_weight > 0:
        (grad,) = torch.autograd.grad(logits_real.sum(), real, create_graph=True)
        d_loss = d_loss + r1_weight * grad.pow(2).flatten(1).sum(1).mean()
    d_loss.backward()

    _put_grads(encoder, encoder_grads)
    _put_grads(decoder, decoder_grads)
    return {"loss/kl": kl.detach(), "loss/dis_l": dis_l.detach(), "loss/features": features.detach(),
            "loss/gan": gan.detach(), "loss/dis": d_loss.detach(),
            "weight/adv": torch.as_tensor(adv_weight, dtype=torch.float32)}


def reference_step(nets: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer], x: torch.Tensor,
                   eps: torch.Tensor, z_prior: torch.Tensor, loss_cfg: LossConfig,
                   kl_weight: float) -> dict[str, torch.Tensor]:
    """One full iteration: gradients as above, then every optimizer steps once."""
    logs = reference_gradients(nets["encoder"], nets["decoder"], nets["discriminator"], x, eps, z_prior,
                               loss_cfg, kl_weight)
    for opt in optimizers.values():
        opt.step()
    return logs
