"""Training-step variants measured against the toolkit's own step (see benchmarks/README.md).

Both are proposals for ``vaegan.steps`` / ``vaegan.trainer``; tests/test_fast_step.py checks that
each gives every parameter the reference step's gradient.

``split_vaegan_forward`` replaces ``steps.vaegan_forward``: the same networks, losses and
batch-norm statistics, but each source (real, reconstructed, prior) goes through the decoder and
the discriminator as its own call instead of stacked into one batch. Autograd prunes by graph,
and a slice of a concatenation reaches everything that was concatenated: with stacked sources
the encoder's backward crosses the discriminator and decoder for every source (prior and real
included, with zero gradients), the decoder's crosses the real images' discriminator pass.
Split, each backward crosses only the sources its loss reads: 17% fewer FLOPs per step at 64 px.

``chained_vaegan_step`` replaces ``Trainer.vaegan_step`` (with the split forward): the
discriminator sees the fakes as leaves of their own, so one backward gives its weights their
gradient and, for the original minimax loss, also the GAN loss's gradient at the fakes (it is
minus the discriminator's). The generator's gradients are then chained into the decoder and the
encoder by hand, each network's backward crossing the graph once. 11% fewer FLOPs than the split
forward alone at 64 px (26% fewer than the stacked forward).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from vaegan import losses, steps
from vaegan.trainer import Trainer


def split_vaegan_forward(encoder, decoder, discriminator, x: torch.Tensor, eps: torch.Tensor,
                         z_prior: torch.Tensor, fake_sources: str) -> steps.Forward:
    """``steps.vaegan_forward`` with one call per source. x: (B, 3, R, R); eps, z_prior: (B, D)."""
    posterior = encoder(x)
    x_rec = decoder(posterior.sample(eps))
    x_prior = decoder(z_prior) if fake_sources in ("prior", "both") else None
    logits_real, features_real = discriminator(x)
    logits_rec, features_rec = discriminator(x_rec.to(x.dtype))
    logits_prior = discriminator(x_prior.to(x.dtype))[0] if x_prior is not None else None
    return steps.Forward(x=x, posterior=posterior, x_rec=x_rec, x_prior=x_prior, logits_real=logits_real,
                         logits_fake=_fake_logits(logits_rec, logits_prior, fake_sources),
                         features_real=features_real, features_rec=features_rec)


def _fake_logits(logits_rec, logits_prior, fake_sources: str) -> torch.Tensor:
    return {"recon": lambda: logits_rec, "prior": lambda: logits_prior,
            "both": lambda: torch.cat([logits_rec, logits_prior])}[fake_sources]()


def chained_vaegan_step(tr: Trainer, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``Trainer.vaegan_step`` with the generator's gradients chained by hand (see the module doc).

    Same noise draws, losses, logs, routing and optimizer bookkeeping as the toolkit's step; the
    adaptive adversarial weight is not supported (the caller falls back to the toolkit's step).
    """
    lc = tr.cfg.loss
    enc, dec, dis = tr.nets["encoder"], tr.nets["decoder"], tr.nets["discriminator"]
    b, d = x.shape[0], tr.cfg.model.latent_dim
    kl_w = losses.kl_weight(tr.step, lc.beta, lc.kl_warmup_steps)
    eps, z_prior = tr._draw((b, d)), tr._draw((b, d))
    with tr.autocast():
        posterior = enc(x)
        fakes = [dec(posterior.sample(eps))]
        if lc.fake_sources in ("prior", "both"):
            fakes.append(dec(z_prior))
        # The discriminator reads the fakes as leaves: its backward stops there.
        leaves = [f.detach().to(x.dtype).requires_grad_() for f in fakes]
        logits_real, features_real = dis(x)
        logits_rec, features_rec = dis(leaves[0])
        logits_prior = dis(leaves[1])[0] if len(leaves) > 1 else None
        fwd = steps.Forward(x=x, posterior=posterior, x_rec=fakes[0], x_prior=fakes[1] if len(fakes) > 1 else None,
                            logits_real=logits_real, logits_fake=_fake_logits(logits_rec, logits_prior, lc.fake_sources),
                            features_real=features_real, features_rec=features_rec)
        logs = steps.discriminator_loss(fwd, lc)
        logs.update(steps.generator_losses(fwd, lc, kl_w))
    if not tr._all_finite(logs):
        return logs
    train_dis, adv_on = tr._balance(logs)
    w_adv = logs["weight/adv"] = tr._adversarial_weight(fwd, logs, adv_on)
    logs["train/dis_updated"] = torch.tensor(float(train_dis))

    def scaled(loss: torch.Tensor) -> torch.Tensor:
        loss = loss / tr.cfg.train.grad_accum_steps
        return tr.scaler.scale(loss) if tr.scaler is not None else loss

    def take(tensors: list[torch.Tensor], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Backward of ``tensors`` into ``inputs`` (leaves); returns and clears their gradients."""
        torch.autograd.backward(tensors, inputs=inputs, retain_graph=True)
        out = [torch.zeros_like(t) if t.grad is None else t.grad for t in inputs]
        for t in inputs:
            t.grad = None
        return out

    # Discriminator step: its loss into its weights; for the original minimax loss, the same pass
    # gives the GAN loss's gradient at the fakes (d GAN / d fake = -d dis / d fake).
    reuse = lc.adversarial == "original" and train_dis
    torch.autograd.backward(scaled(logs["loss/dis"] * float(train_dis)),
                            inputs=list(dis.parameters()) + (leaves if reuse else []), retain_graph=True)
    tr.active["discriminator"] = train_dis
    if reuse:
        v = [-w_adv * (torch.zeros_like(t) if t.grad is None else t.grad) for t in leaves]
        for t in leaves:
            t.grad = None
    else:
        v = take([scaled(w_adv * logs["loss/gan"])], leaves)
    u = take([scaled(logs["loss/dis_l"])], leaves[:1])[0]  # Dis_l's gradient at the reconstructions

    # Generator step. Decoder: gamma * Dis_l + w_adv * GAN; encoder: beta * KL + Dis_l.
    cotangents = [lc.gamma * u + v[0], *v[1:]]
    torch.autograd.backward(fakes, [c.to(f.dtype) for c, f in zip(cotangents, fakes)],
                            inputs=list(dec.parameters()), retain_graph=True)
    torch.autograd.backward([scaled(kl_w * logs["loss/kl"]), fakes[0]], [None, u.to(fakes[0].dtype)],
                            inputs=list(enc.parameters()))
    return logs


@contextmanager
def install_split_forward():
    """Within the block, every Trainer runs ``split_vaegan_forward``."""
    original = steps.vaegan_forward
    steps.vaegan_forward = split_vaegan_forward
    try:
        yield
    finally:
        steps.vaegan_forward = original


@contextmanager
def install_chained_step():
    """Within the block, every Trainer runs ``chained_vaegan_step`` (unless the adaptive weight is on)."""
    original = Trainer.vaegan_step

    def vaegan_step(self, x):
        return original(self, x) if self.cfg.loss.adaptive_weight else chained_vaegan_step(self, x)

    Trainer.vaegan_step = vaegan_step
    try:
        yield
    finally:
        Trainer.vaegan_step = original
