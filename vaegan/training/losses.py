"""Loss terms as pure functions of tensors. Every reduction runs in float32.

Units: reconstruction, feature and KL terms are summed over an image's elements (a
log-likelihood per image, up to constants) and averaged over the batch; GAN terms are
averaged over the batch.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from vaegan.models.distributions import DiagonalGaussian, aggregate_moments, gaussian_kl_to_standard


def kl_loss(posterior: DiagonalGaussian) -> torch.Tensor:
    """Mean over the batch of KL(q(z|x) || N(0, I))."""
    return posterior.kl().mean()


IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def mmd_loss(z: torch.Tensor, z_prior: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 between a batch of codes z and draws z_prior from N(0, I), both (B, D), B >= 2.

    The aggregate-posterior penalty of InfoVAE (Zhao et al. 2017) and WAE-MMD (Tolstikhin et al.
    2018), with WAE's kernel: the sum over scales s of inverse multiquadratics C / (C + |a - b|^2),
    C = 2 D s. It compares the batch's codes as a set with the prior, so it can pull the codes'
    distribution towards N(0, I) without shrinking each code's information as a larger KL weight
    does (with 64 codes in 128 dimensions it nears its noise floor early: README). Near 0 (and
    negative by chance) when z is distributed as the prior.
    """
    if z.shape != z_prior.shape or z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"mmd_loss: expected two (B, D) batches with B >= 2, got {tuple(z.shape)} and {tuple(z_prior.shape)}")
    z, z_prior = z.float(), z_prior.float()
    n, d = z.shape
    both = torch.cat([z, z_prior])
    dist2 = torch.cdist(both, both).pow(2)
    kernel = sum(2 * d * s / (2 * d * s + dist2) for s in IMQ_SCALES)
    off = 1.0 - torch.eye(n, device=z.device)
    k_zz, k_pp, k_zp = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    return ((k_zz * off).sum() + (k_pp * off).sum()) / (n * (n - 1)) - 2 * k_zp.mean()


def aggregate_kl_loss(posterior: DiagonalGaussian, running: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """KL(N(m, C) || N(0, I)) of the aggregate posterior's moments, with this batch's gradient.

    ``running``: (m, C), running estimates of the aggregate posterior's mean and covariance over
    many batches (:class:`vaegan.training.moments.RunningMoments`), so full rank and low in noise
    where one batch of B codes in D >= B dimensions gives a singular, noisy covariance. The value
    is the KL of those estimates (a constant here); the gradient is the KL's gradient at them,
    dKL/dm = m and dKL/dC = (I - C^-1) / 2, carried into the codes through this batch's own
    moments (m_B, C_B): the KL's first-order change as the batch moves its codes. That is the
    part of the per-image KL's average that is not the codes' information about the images
    (average KL = I(x; z) + KL(q(z) || p(z)), Hoffman & Johnson 2016), estimated to second
    moments; its gradient is largest along the directions the codes leave thinnest, where N(0, I)
    draws land off them.
    """
    mean, var = posterior.mean.float(), posterior.logvar.float().exp()
    m_run, c_run = (t.detach().double() for t in running)
    eye = torch.eye(len(m_run), dtype=torch.float64, device=m_run.device)
    grad_m, grad_c = m_run.float(), (0.5 * (eye - torch.linalg.inv(c_run))).float()
    with torch.autocast(mean.device.type, enabled=False):  # the covariance's matmul in float32, not bf16
        m_b, c_b = aggregate_moments(mean, var)
    first_order = m_b.dot(grad_m) + (c_b * grad_c).sum()
    return gaussian_kl_to_standard(m_run, c_run).float() + first_order - first_order.detach()


def pixel_loss(x_rec: torch.Tensor, x: torch.Tensor, kind: str = "gaussian") -> torch.Tensor:
    """-log p(x|z) per image up to a constant, batch mean. x, x_rec: (B, 3, H, W) in [-1, 1].

    gaussian: sum of squared errors (variance 1/2); l1: sum of absolute errors (Laplace);
    bernoulli: binary cross-entropy of pixels mapped to [0, 1].
    """
    x_rec, x = x_rec.float(), x.float()
    if kind == "gaussian":
        per_elem = (x_rec - x).pow(2)
    elif kind == "l1":
        per_elem = (x_rec - x).abs()
    elif kind == "bernoulli":
        p = ((x_rec + 1) / 2).clamp(1e-6, 1 - 1e-6)
        per_elem = F.binary_cross_entropy(p, (x + 1) / 2, reduction="none")
    else:
        raise ValueError(f"unknown reconstruction loss {kind!r}; choose gaussian, l1 or bernoulli")
    return per_elem.flatten(1).sum(1).mean()


def feature_loss(features_rec: Sequence[torch.Tensor], features_real: Sequence[torch.Tensor]) -> torch.Tensor:
    """Larsen's Dis_l loss: sum of squared feature differences per image, batch mean.

    A Gaussian log-likelihood of Dis_l(x) around Dis_l(x_rec) with identity covariance (x2).
    Given several layers (finest first, Dis_l last), the mean over layers of each layer's sum,
    each rescaled to Dis_l's element count: every layer weighs as much as Dis_l, and the term
    keeps Dis_l's scale against the KL and pixel terms. One layer is Larsen's loss exactly.
    The real features are a target: no gradient flows into them.
    """
    if len(features_rec) != len(features_real) or not features_rec:
        raise ValueError(f"feature_loss: {len(features_rec)} reconstructed vs {len(features_real)} real layers")
    size = features_rec[-1][0].numel()
    total = 0.0
    for rec, real in zip(features_rec, features_real):
        sse = (rec.float() - real.detach().float()).pow(2).flatten(1).sum(1).mean()
        total = total + sse * (size / rec[0].numel())
    return total / len(features_rec)


def d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor, kind: str = "original") -> torch.Tensor:
    """Discriminator loss; real and fake halves weigh equally whatever the batch sizes."""
    logits_real, logits_fake = logits_real.float(), logits_fake.float()
    if kind in ("original", "nonsaturating"):
        return F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()
    if kind == "hinge":
        return F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean()
    raise ValueError(f"unknown adversarial loss {kind!r}; choose original, nonsaturating or hinge")


def g_loss(logits_fake: torch.Tensor, kind: str = "original") -> torch.Tensor:
    """Generator (decoder) adversarial loss on the discriminator's fake logits.

    original: minimise log(1 - D(G(z))) (the minimax game of Goodfellow et al. and Larsen);
    nonsaturating: minimise -log D(G(z)); hinge: minimise -logit.
    """
    logits_fake = logits_fake.float()
    if kind == "original":
        return -F.softplus(logits_fake).mean()
    if kind == "nonsaturating":
        return F.softplus(-logits_fake).mean()
    if kind == "hinge":
        return -logits_fake.mean()
    raise ValueError(f"unknown adversarial loss {kind!r}; choose original, nonsaturating or hinge")


def r1_penalty(logits_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of |d logit / d x|^2 at real images (Mescheder et al. 2018).

    real: the (B, 3, H, W) leaf the logits were computed from, requiring grad. The gradient is
    taken with create_graph, so the penalty itself trains the discriminator.
    """
    (grad,) = torch.autograd.grad(logits_real.float().sum(), real, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


def bce_real_fake(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Discriminator cross-entropies on real and on fake, as Larsen's equilibrium rule reads them."""
    return F.softplus(-logits_real.float()).mean(), F.softplus(logits_fake.float()).mean()


def adaptive_weight(
    rec_loss: torch.Tensor, adv_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """||grad rec_loss|| / ||grad adv_loss|| at the decoder's last layer (detached, clamped).

    Balances the adversarial term against the reconstruction term as in taming-transformers.
    """
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv_loss, last_layer, retain_graph=True)[0]
    return gradient_ratio(g_rec, g_adv, max_weight)


def gradient_ratio(g_rec: torch.Tensor, g_adv: torch.Tensor, max_weight: float = 1e4) -> torch.Tensor:
    """||g_rec|| / ||g_adv||, detached and clamped to [0, max_weight]: the adaptive weight."""
    weight = g_rec.float().norm() / (g_adv.float().norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


def kl_weight(step: int, beta: float, warmup_steps: int) -> float:
    """beta, ramped linearly from 0 over the first warmup_steps steps."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, step / warmup_steps)


def equilibrium(bce_real: float, bce_fake: float, target: float, margin: float) -> tuple[bool, bool]:
    """Larsen's rule: (train_discriminator, train_decoder_adversarially).

    The discriminator pauses when it is winning by more than the margin, the decoder's
    adversarial update when the discriminator is losing by more than it; never both.
    """
    train_dis = not (bce_real < target - margin or bce_fake < target - margin)
    train_dec = not (bce_real > target + margin or bce_fake > target + margin)
    if not (train_dis or train_dec):
        return True, True
    return train_dis, train_dec
