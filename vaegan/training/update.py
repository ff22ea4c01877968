"""One training iteration of each model family: forward, losses, routing, optimizer steps.

:class:`Update` is the whole iteration as one call with explicit inputs and outputs::

    update = Update(cfg, nets, optimizers, LossScale(accum_steps, scaler), autocast, last_layer)
    result = update(x, noise, step, sync=True)     # -> Result(logs, finite, stepped, noise)

The VAE-GAN iteration runs each network forward once per source (the decoder on posterior
and prior latents, the discriminator on real, reconstructed and prior images, so batch-norm
statistics stay per source) and then routes each loss to the network that learns from it:

    discriminator  <- GAN loss (+ R1 penalty)
    encoder        <- beta * KL (+ mmd_weight * MMD, agg_kl_weight * aggregate KL of the codes
                      against N(0, I)) + rec
    decoder        <- gamma * rec + w_adv * GAN loss

where rec is the Dis_l feature loss (with ``loss.feature_layers`` > 1, averaged with finer
discriminator layers) plus ``loss.pixel_weight`` times the pixel likelihood.

The discriminator reads the fakes as detached leaves: its backward stops there, and the
generator's gradients at the fakes are chained into the decoder and encoder by hand, so each
backward crosses only the graph its network learns through. Routing uses
``backward(inputs=...)``, so no gradient of one loss reaches another network's parameters. All
backward passes run before any optimizer steps, so no pass sees weights that an earlier step
changed in place. Gradients at the fakes carry the loss scale (:class:`LossScale`) like every
other gradient; only the adaptive weight, a ratio, divides it back out.
"""
from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from vaegan.config import Config, LossConfig
from vaegan.models.distributions import DiagonalGaussian, aggregate_moments
from vaegan.training import augment, losses
from vaegan.training.moments import RunningMoments

Noise = Callable[[tuple[int, ...]], torch.Tensor]  # shape -> standard normal noise, the same on every rank


@dataclass
class Forward:
    """Everything one VAE-GAN forward pass produced; batch size B."""

    x: torch.Tensor  # (B, 3, R, R) real images in [-1, 1]
    posterior: DiagonalGaussian
    z: torch.Tensor  # (B, D) the posterior sample x_rec was decoded from
    x_rec: torch.Tensor  # (B, 3, R, R)
    x_prior: torch.Tensor | None  # (B, 3, R, R) decoded prior samples, if the loss uses them
    logits_real: torch.Tensor  # (B,)
    logits_fake: torch.Tensor  # (F*B,) for the F fake sources the GAN loss uses
    features_real: tuple[torch.Tensor, ...]  # the discriminator's features of x, finest first, Dis_l last
    features_rec: tuple[torch.Tensor, ...]  # the same of x_rec
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
    ``augment_params`` (see :mod:`vaegan.training.augment`) transform every image the discriminator reads,
    the same transform for each source at one batch index. ``r1``: the real images are read as a
    leaf that requires grad, for the R1 penalty.
    """
    posterior = encoder(x)
    z = posterior.sample(eps)
    fakes = [decoder(z)]
    if fake_sources in ("prior", "both"):
        fakes.append(decoder(z_prior, from_prior=True))  # batch norm keeps this source's statistics apart
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
        x=x, posterior=posterior, z=z, x_rec=fakes[0], x_prior=fakes[1] if len(fakes) > 1 else None,
        logits_real=logits_real, logits_fake=torch.cat(logits[fake_sources]),
        features_real=features_real, features_rec=features_rec, fake_inputs=inputs, real_input=real,
    )


def discriminator_loss(fwd: Forward, cfg: LossConfig) -> dict[str, torch.Tensor]:
    """The GAN loss and the discriminator's diagnostics (R1: :func:`add_r1`)."""
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


def add_r1(logs: dict[str, torch.Tensor], fwd: Forward, r1_weight: float) -> None:
    """Add ``r1_weight`` times the R1 penalty to loss/dis (the forward must have run with ``r1``)."""
    logs["dis/r1"] = losses.r1_penalty(fwd.logits_real, fwd.real_input)
    logs["loss/dis"] = logs["loss/dis"] + r1_weight * logs["dis/r1"]


def generator_losses(fwd: Forward, cfg: LossConfig, kl_weight: float, z_mmd: torch.Tensor | None = None,
                     running: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Encoder and decoder objectives before the adversarial weight is applied.

    loss/rec, the reconstruction term both learn from, is the feature term (Dis_l, or with
    ``cfg.feature_layers`` > 1 the mean over layers, logged as loss/features) plus
    ``cfg.pixel_weight`` times the pixel likelihood of the (unaugmented) reconstruction the
    discriminator read. loss/dis_l is always Dis_l alone. With ``cfg.mmd_weight`` > 0, loss/mmd
    compares the codes ``fwd.z`` with the prior draws ``z_mmd``; see :func:`add_latent_terms` for
    loss/agg_kl (``running``)."""
    kl = losses.kl_loss(fwd.posterior)
    n = cfg.feature_layers
    feat = losses.feature_loss(fwd.features_rec[-n:], fwd.features_real[-n:])
    adv = losses.g_loss(fwd.logits_fake, cfg.adversarial)
    logs = {"loss/kl": kl, "loss/dis_l": feat, "loss/rec": feat, "loss/gan": adv, "weight/kl": torch.tensor(kl_weight)}
    if n > 1:  # the term trained on is the mean over layers; loss/dis_l stays Dis_l alone
        logs["loss/features"] = feat
        with torch.no_grad():  # a log value: no graph recorded for it
            logs["loss/dis_l"] = losses.feature_loss(fwd.features_rec[-1:], fwd.features_real[-1:])
    if cfg.pixel_weight > 0:
        logs["loss/pixel"] = losses.pixel_loss(fwd.fake_inputs[0], fwd.x, cfg.recon)
        logs["loss/rec"] = feat + cfg.pixel_weight * logs["loss/pixel"]
    add_latent_terms(logs, fwd.posterior, fwd.z, z_mmd, cfg, running)
    return logs


def add_latent_terms(logs: dict[str, torch.Tensor], posterior: DiagonalGaussian, z: torch.Tensor,
                     z_mmd: torch.Tensor | None, cfg: LossConfig,
                     running: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """The aggregate-posterior penalties the encoder learns from besides the KL, each when its
    weight is > 0: loss/mmd between codes z and N(0, I) draws z_mmd (both (B, D)), loss/agg_kl
    the KL to N(0, I) of the ``running`` estimates of the codes' aggregate mean and covariance
    (:func:`losses.aggregate_kl_loss`; NaN, so that the step is skipped, when the batch's
    moments were not finite: ``running`` None)."""
    if cfg.mmd_weight > 0:
        logs["loss/mmd"] = losses.mmd_loss(z, z_mmd)
    if cfg.agg_kl_weight > 0:
        logs["loss/agg_kl"] = (losses.aggregate_kl_loss(posterior, running) if running is not None
                               else torch.full((), math.nan, device=posterior.mean.device))


def latent_penalty(logs: dict[str, torch.Tensor], cfg: LossConfig, kl_weight: float) -> torch.Tensor:
    """The encoder's prior-side loss: kl_weight * KL plus the weighted terms of :func:`add_latent_terms`."""
    total = kl_weight * logs["loss/kl"]
    if "loss/mmd" in logs:
        total = total + cfg.mmd_weight * logs["loss/mmd"]
    if "loss/agg_kl" in logs:
        total = total + cfg.agg_kl_weight * logs["loss/agg_kl"]
    return total


def vae_losses(posterior: DiagonalGaussian, x_rec: torch.Tensor, x: torch.Tensor, cfg: LossConfig,
               kl_weight: float, z: torch.Tensor | None = None, z_mmd: torch.Tensor | None = None,
               running: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Pixel reconstruction + kl_weight * KL (+ the weighted terms of :func:`add_latent_terms`)."""
    kl = losses.kl_loss(posterior)
    rec = losses.pixel_loss(x_rec, x, cfg.recon)
    logs = {"loss/kl": kl, "loss/recon": rec, "weight/kl": torch.tensor(kl_weight)}
    add_latent_terms(logs, posterior, z, z_mmd, cfg, running)
    logs["loss/total"] = rec + latent_penalty(logs, cfg, kl_weight)
    return logs


# ---------------------------------------------------------------------------- the update


class LossScale:
    """How a loss reaches backward: divided by the accumulation steps and, with fp16, multiplied by
    the GradScaler's scale. The one place where gradients are scaled, unscaled and stepped."""

    def __init__(self, accum_steps: int = 1, scaler: torch.amp.GradScaler | None = None):
        self.accum_steps, self.scaler = accum_steps, scaler

    def __call__(self, loss: torch.Tensor) -> torch.Tensor:
        loss = loss / self.accum_steps
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def factor(self, device: torch.device) -> torch.Tensor:
        """What a loss of 1 becomes: divide a gradient by it to get the unscaled one."""
        return self(torch.ones((), device=device)).detach()

    def step(self, optimizers: dict[str, torch.optim.Optimizer], nets: dict[str, nn.Module],
             active: dict[str, bool], clip: float) -> dict[str, torch.Tensor]:
        """Unscale every gradient, clip (and log the norm of) each network's, step the active
        optimizers once, then one scaler update for all. Returns the norms."""
        norms = {}
        for name, opt in optimizers.items():
            if self.scaler is not None:
                self.scaler.unscale_(opt)
            params = [p for p in nets[name].parameters() if p.grad is not None]
            norms[f"grad_norm/{name}"] = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
        for name, opt in optimizers.items():
            if not active[name]:
                continue
            if self.scaler is not None:
                self.scaler.step(opt)
            else:
                opt.step()
        if self.scaler is not None:
            self.scaler.update()
        return norms


@dataclass
class Result:
    """What one call of :class:`Update` did."""

    logs: dict[str, torch.Tensor]  # scalar tensors: losses, weights, discriminator statistics, grad norms
    finite: bool  # every logged loss finite on every rank; if not, nothing learned from this batch
    stepped: tuple[str, ...] = ()  # networks whose optimizer stepped (none while accumulating or when not finite)
    paused: tuple[str, ...] = ()  # networks that learn nothing from this batch (the equilibrium rule)
    noise: dict = field(default_factory=dict)  # what was drawn: eps, z_prior (B, D), augment parameters


class Update:
    """One iteration of the model ``cfg.model.kind`` names, over (possibly data-parallel) networks.

    nets / optimizers: {"encoder", "decoder"[, "discriminator"]}; ``autocast()`` opens the
    forward's precision context; ``last_layer``: the decoder's last weight (the adaptive weight's
    gradient ratio is taken there); ``reduce_sum``: sums a tensor over ranks (identity on one).
    """

    def __init__(self, cfg: Config, nets: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                 scale: LossScale, autocast: Callable[[], AbstractContextManager],
                 last_layer: torch.Tensor | None = None,
                 reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t):
        self.cfg, self.nets, self.optimizers, self.scale = cfg, nets, optimizers, scale
        self.autocast, self.last_layer, self.reduce_sum = autocast, last_layer, reduce_sum
        self.is_gan = cfg.model.kind == "vaegan"
        self.moments = None  # running aggregate-posterior moments, for loss.agg_kl_weight
        if cfg.loss.agg_kl_weight > 0:
            self.moments = RunningMoments(cfg.model.latent_dim, next(nets["encoder"].parameters()).device)

    def __call__(self, x: torch.Tensor, noise: Noise, step: int, sync: bool = True) -> Result:
        """Backward of one micro-batch x: (B, 3, R, R) in [-1, 1] at training step ``step``; with
        ``sync`` (the last micro-batch of a step) also the optimizer steps and zeroed gradients."""
        if self.is_gan and step >= self.cfg.loss.warm_start_steps:
            result = self.vaegan_backward(x, noise, step)
        else:  # the plain VAE, or the VAE-GAN's warm start (its discriminator neither runs nor learns)
            result = self.vae_backward(x, noise, step)
            result.paused = ("discriminator",) if self.is_gan else ()
        if not sync:
            return result
        if result.finite:
            active = {name: name not in result.paused for name in self.optimizers}
            result.logs.update(self.scale.step(self.optimizers, self.nets, active, self.cfg.optim.grad_clip))
            result.stepped = tuple(name for name, on in active.items() if on)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        return result

    def vae_backward(self, x: torch.Tensor, noise: Noise, step: int) -> Result:
        """Plain VAE: encoder and decoder minimise pixel reconstruction + beta * KL (+ the weighted
        MMD and aggregate-KL terms)."""
        lc, shape = self.cfg.loss, (x.shape[0], self.cfg.model.latent_dim)
        eps = noise(shape)
        z_mmd = noise(shape) if lc.mmd_weight > 0 else None
        kl_w = losses.kl_weight(step, lc.beta, lc.kl_warmup_steps)
        with self.autocast():
            posterior = self.nets["encoder"](x)
            z = posterior.sample(eps)
            x_rec = self.nets["decoder"](z)
            logs = vae_losses(posterior, x_rec, x, lc, kl_w, z, z_mmd, self.observe_codes(posterior))
        finite = self.all_finite(logs)
        if finite:
            self.scale(logs["loss/total"]).backward()
        return Result(logs, finite, noise={"eps": eps, **({"z_mmd": z_mmd} if z_mmd is not None else {})})

    def vaegan_backward(self, x: torch.Tensor, noise: Noise, step: int) -> Result:
        """Larsen VAE-GAN: one forward, the equilibrium decision, the discriminator's backward,
        then the decoder's and encoder's."""
        lc, b, d = self.cfg.loss, x.shape[0], self.cfg.model.latent_dim
        kl_w = losses.kl_weight(step, lc.beta, lc.kl_warmup_steps)
        kinds = augment.parse(lc.dis_augment)
        aug = augment.draw(kinds, b, lambda shape: torch.special.ndtr(noise(shape))) if kinds else None
        r1_weight = lc.r1_gamma / 2 * lc.r1_every_steps if lc.r1_gamma > 0 and step % lc.r1_every_steps == 0 else 0.0
        drawn = {"eps": noise((b, d)), "z_prior": noise((b, d)), "augment": aug}
        if lc.mmd_weight > 0:
            drawn["z_mmd"] = noise((b, d))
        with self.autocast():
            fwd = vaegan_forward(self.nets["encoder"], self.nets["decoder"], self.nets["discriminator"], x,
                                 drawn["eps"], drawn["z_prior"], lc.fake_sources, detach_fakes=True,
                                 augment_params=aug, r1=r1_weight > 0)
            logs = discriminator_loss(fwd, lc)
            logs.update(generator_losses(fwd, lc, kl_w, drawn.get("z_mmd"), self.observe_codes(fwd.posterior)))
        if not self.all_finite(logs):
            return Result(logs, False, noise=drawn)
        train_dis, adv_on = balance(logs, lc, step, self.mean_over_ranks)
        if train_dis and r1_weight > 0:  # not on steps the equilibrium rule pauses the discriminator
            with self.autocast():
                add_r1(logs, fwd, r1_weight)
            if not self.all_finite(logs):
                return Result(logs, False, noise=drawn)
        logs["train/dis_updated"] = torch.tensor(float(train_dis))
        gan_grads_at_fakes = self.discriminator_backward(fwd, logs["loss/dis"], train_dis)
        logs["weight/adv"] = self.generator_backward(fwd, logs, kl_w, adv_on, gan_grads_at_fakes)
        return Result(logs, True, noise=drawn, paused=() if train_dis else ("discriminator",))

    def discriminator_backward(self, fwd: Forward, loss: torch.Tensor, train: bool) -> list[torch.Tensor] | None:
        """The discriminator's gradient of its GAN loss. A paused discriminator still runs its
        backward (scaled by zero) so that data-parallel gradient hooks stay in step.

        With the original minimax loss the same pass gives the generator's GAN-loss gradients at
        the fakes (minus the discriminator's), which are returned, loss-scaled; else None."""
        reuse = train and self.cfg.loss.adversarial == "original"
        leaves = fwd.fake_inputs if reuse else []
        params = list(self.nets["discriminator"].parameters())
        self.scale(loss * float(train)).backward(inputs=params + list(leaves), retain_graph=True)
        return [-g for g in _take_grads(leaves)] if reuse else None

    def generator_backward(self, fwd: Forward, logs: dict[str, torch.Tensor], kl_w: float, adv_on: bool,
                           gan_grads_at_fakes: list[torch.Tensor] | None) -> torch.Tensor:
        """Decoder: gamma * rec + w_adv * GAN (its prior samples' part times loss.prior_adv_weight);
        encoder: beta * KL (+ the weighted MMD and aggregate-KL terms) + rec
        (rec: Dis_l + pixel term).

        Both are chained from the losses' (scaled) gradients at the fakes the discriminator read.
        Returns w_adv."""
        lc, fakes = self.cfg.loss, [f for f in (fwd.x_rec, fwd.x_prior) if f is not None]
        rec_grad = self.grads_at(logs["loss/rec"], fwd.fake_inputs[:1])[0]
        gan_grads = gan_grads_at_fakes
        if gan_grads is None:
            gan_grads = self.grads_at(logs["loss/gan"], fwd.fake_inputs) if adv_on else \
                [torch.zeros_like(f) for f in fakes]
        w_adv = self.adversarial_weight(fakes, rec_grad, gan_grads, adv_on)
        decoder_grads = [lc.gamma * rec_grad + w_adv * gan_grads[0],
                         *(lc.prior_adv_weight * w_adv * g for g in gan_grads[1:])]
        torch.autograd.backward(fakes, [g.to(f.dtype) for g, f in zip(decoder_grads, fakes)],
                                inputs=list(self.nets["decoder"].parameters()), retain_graph=True)
        latent = latent_penalty(logs, lc, kl_w)
        torch.autograd.backward([self.scale(latent), fakes[0]], [None, rec_grad.to(fakes[0].dtype)],
                                inputs=list(self.nets["encoder"].parameters()))
        return w_adv

    def grads_at(self, loss: torch.Tensor, leaves: list[torch.Tensor]) -> list[torch.Tensor]:
        """d scale(loss) / d leaves (zeros where the loss does not reach)."""
        self.scale(loss).backward(inputs=leaves, retain_graph=True)
        return _take_grads(leaves)

    def adversarial_weight(self, fakes: list[torch.Tensor], rec_grad: torch.Tensor, gan_grads: list[torch.Tensor],
                           adv_on: bool) -> torch.Tensor:
        """0 before the adversarial term starts, else loss.adv_weight times 1 or (adaptive) the ratio
        of the rec and GAN gradient norms at the decoder's last layer; rec_grad, gan_grads: the
        losses' scaled gradients at the fakes."""
        lc, device = self.cfg.loss, rec_grad.device
        if not adv_on:
            return torch.zeros((), device=device)
        if not lc.adaptive_weight:
            return torch.full((), lc.adv_weight, device=device)
        unscale = self.scale.factor(device)
        g_rec = torch.autograd.grad(fakes[0], self.last_layer, (lc.gamma * rec_grad / unscale).to(fakes[0].dtype),
                                    retain_graph=True)[0]
        g_adv = torch.autograd.grad(fakes, self.last_layer, [(g / unscale).to(f.dtype) for g, f in zip(gan_grads, fakes)],
                                    retain_graph=True)[0]
        return lc.adv_weight * losses.gradient_ratio(g_rec, g_adv, lc.adaptive_weight_max)

    def observe_codes(self, posterior: DiagonalGaussian) -> tuple[torch.Tensor, torch.Tensor] | None:
        """With loss.agg_kl_weight: fold this micro-batch's aggregate moments, averaged over ranks
        (every rank keeps the same estimates), into the running ones and return those; None when
        off, or when the moments are not finite (they are then left out)."""
        if self.moments is None:
            return None
        with torch.no_grad():
            mean, cov = aggregate_moments(posterior.mean.double(), posterior.logvar.double().exp())
            flat = torch.cat([mean, cov.flatten(), torch.ones(1, dtype=mean.dtype, device=mean.device)])
            flat = self.reduce_sum(flat)
            flat = flat[:-1] / flat[-1]
            if not torch.isfinite(flat).all():
                return None
            d = len(mean)
            self.moments.update(flat[:d], flat[d:].reshape(d, d))
        return self.moments.estimate()

    def mean_over_ranks(self, values: list[torch.Tensor]) -> list[float]:
        """The scalars' means over all ranks (themselves on one process)."""
        count = torch.ones((), device=values[0].device)
        total = self.reduce_sum(torch.stack([v.detach().float().reshape(()) for v in values] + [count]))
        return (total[:-1] / total[-1]).tolist()

    def all_finite(self, logs: dict[str, torch.Tensor]) -> bool:
        """All ranks agree: every loss term finite (a NaN anywhere skips the step everywhere)."""
        values = torch.stack([v.detach().float().reshape(()) for v in logs.values()])
        return bool(torch.isfinite(self.reduce_sum(values)).all())


def balance(logs: dict[str, torch.Tensor], lc: LossConfig, step: int,
            mean_over_ranks: Callable[[list[torch.Tensor]], list[float]]) -> tuple[bool, bool]:
    """(train the discriminator, give the decoder its adversarial term) at this step: the
    adversarial start, and Larsen's equilibrium rule when it is on.

    The rule reads the discriminator's cross-entropies averaged over ranks (the global batch's),
    so every rank makes the same decision: a rank that paused its discriminator while another
    stepped it would leave the replicas with different weights."""
    train_dis, train_dec = True, step >= lc.adv_start_step
    if lc.equilibrium:
        bce_real, bce_fake = mean_over_ranks([logs["dis/bce_real"], logs["dis/bce_fake"]])
        eq_dis, eq_dec = losses.equilibrium(bce_real, bce_fake, lc.equilibrium_target, lc.equilibrium_margin)
        train_dis, train_dec = eq_dis, train_dec and eq_dec
    return train_dis, train_dec


def _take_grads(leaves: list[torch.Tensor]) -> list[torch.Tensor]:
    """The leaves' gradients (zeros where none arrived), leaving them with none."""
    grads = [torch.zeros_like(t) if t.grad is None else t.grad for t in leaves]
    for t in leaves:
        t.grad = None
    return grads
