"""Training-step variants measured against the toolkit's own step (see benchmarks/README.md).

``split_vaegan_forward`` is the proposed replacement for ``vaegan.steps.vaegan_forward``: the
same networks, losses and batch-norm statistics, but each source (real, reconstructed, prior)
runs through the decoder and discriminator as its own call instead of stacked into one batch.
Autograd then prunes by graph: the encoder's backward crosses only the reconstructed images'
discriminator and decoder graphs, the decoder's only the fakes', where the stacked batch makes
every backward cross all of them (a slice of a concatenation still reaches everything it was
concatenated with). ``install_split_forward`` patches it into ``vaegan.steps`` for a benchmark.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from vaegan import steps


def split_vaegan_forward(encoder, decoder, discriminator, x: torch.Tensor, eps: torch.Tensor,
                         z_prior: torch.Tensor, fake_sources: str) -> steps.Forward:
    """``steps.vaegan_forward`` with one call per source. x: (B, 3, R, R); eps, z_prior: (B, D)."""
    posterior = encoder(x)
    x_rec = decoder(posterior.sample(eps))
    x_prior = decoder(z_prior) if fake_sources in ("prior", "both") else None
    logits_real, features_real = discriminator(x)
    logits_rec, features_rec = discriminator(x_rec.to(x.dtype))
    fake = {"recon": [logits_rec]}
    if x_prior is not None:
        logits_prior, _ = discriminator(x_prior.to(x.dtype))
        fake = {"recon": [logits_rec], "prior": [logits_prior], "both": [logits_rec, logits_prior]}
    logits_fake = torch.cat(fake[fake_sources]) if len(fake[fake_sources]) > 1 else fake[fake_sources][0]
    return steps.Forward(x=x, posterior=posterior, x_rec=x_rec, x_prior=x_prior, logits_real=logits_real,
                         logits_fake=logits_fake, features_real=features_real, features_rec=features_rec)


@contextmanager
def install_split_forward():
    """Within the block, every Trainer runs ``split_vaegan_forward``."""
    original = steps.vaegan_forward
    steps.vaegan_forward = split_vaegan_forward
    try:
        yield
    finally:
        steps.vaegan_forward = original
