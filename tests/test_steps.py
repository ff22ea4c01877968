"""Who learns from what: the routing invariants peers get wrong."""
import copy

import pytest
import torch

from vaegan.config import ConfigError
from vaegan.models.distributions import DiagonalGaussian, aggregate_moments, gaussian_kl_to_standard
from vaegan.training.moments import RunningMoments
from vaegan.training import losses
from vaegan.training import update as steps
from vaegan.training.trainer import Trainer

from conftest import tiny_config


def _trainer(tmp_path, *overrides):
    cfg = tiny_config("model.kind=vaegan", "loss.beta=0.7", "loss.gamma=0.3", "train.precision=fp32",
                      "train.channels_last=false", *overrides)
    return Trainer(cfg, tmp_path / "run")


def _batch(tr):
    return tr.prepare_batch(torch.stack([tr.dataset[i] for i in range(tr.local_batch)]))


def _grads(module):
    return [None if p.grad is None else p.grad.clone() for p in module.parameters()]


def _expected(tr, nets, x, noise):
    """Gradients of each network's own objective, computed independently with autograd.grad."""
    fwd = steps.vaegan_forward(nets["encoder"], nets["decoder"], nets["discriminator"], x, noise["eps"],
                               noise["z_prior"], tr.cfg.loss.fake_sources)
    lc = tr.cfg.loss
    latent = lc.beta * losses.kl_loss(fwd.posterior)
    if lc.mmd_weight > 0:  # the encoder's latent term: KL plus the MMD of its codes against the drawn prior
        latent = latent + lc.mmd_weight * losses.mmd_loss(fwd.z, noise["z_mmd"])
    if lc.agg_kl_weight > 0:  # ... plus the aggregate KL, at the running moments the update left (this batch folded in)
        latent = latent + lc.agg_kl_weight * losses.aggregate_kl_loss(fwd.posterior, tr.update.moments.estimate())
    n = lc.feature_layers
    feat = losses.feature_loss(fwd.features_rec[-n:], fwd.features_real[-n:])
    gan = losses.g_loss(fwd.logits_fake, lc.adversarial)
    if lc.fake_sources == "both":  # the mean over both halves, the prior samples' weighed by prior_adv_weight
        rec_logits, prior_logits = fwd.logits_fake.chunk(2)
        gan = (losses.g_loss(rec_logits, lc.adversarial)
               + lc.prior_adv_weight * losses.g_loss(prior_logits, lc.adversarial)) / 2
    dis = losses.d_loss(fwd.logits_real, fwd.logits_fake, lc.adversarial)
    params = {k: list(v.parameters()) for k, v in nets.items()}
    return {
        "encoder": torch.autograd.grad(latent + feat, params["encoder"], retain_graph=True),
        "decoder": torch.autograd.grad(lc.gamma * feat + gan, params["decoder"], retain_graph=True),
        "discriminator": torch.autograd.grad(dis, params["discriminator"], retain_graph=True),
        "encoder_if_leaking": torch.autograd.grad(latent + feat + gan, params["encoder"], retain_graph=True),
    }


@pytest.mark.parametrize("sources,layers,mmd,agg_kl,prior_adv", [
    ("both", 1, 0, 0, 1), ("recon", 1, 0, 0, 1), ("prior", 1, 0, 0, 1), ("both", 2, 0, 0, 1), ("both", 1, 50, 0, 1),
    ("both", 1, 0, 50, 1), ("both", 1, 0, 0, 4)])
def test_each_network_gets_exactly_its_own_gradient(tmp_path, sources, layers, mmd, agg_kl, prior_adv):
    tr = _trainer(tmp_path, f"loss.fake_sources={sources}", f"loss.feature_layers={layers}", f"loss.mmd_weight={mmd}",
                  f"loss.agg_kl_weight={agg_kl}", f"loss.prior_adv_weight={prior_adv}")
    x = _batch(tr)
    nets = {k: copy.deepcopy(v) for k, v in tr.nets.items()}  # same weights and BN state
    result = tr.update(x, tr.noise, tr.step, sync=False)  # gradients, no optimizer step
    expected = _expected(tr, nets, x, result.noise)
    for name in ("encoder", "decoder", "discriminator"):
        got = _grads(tr.nets[name])
        for g, e in zip(got, expected[name]):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4 * float(e.abs().max()))
    if sources == "prior":
        return  # the GAN term then never reaches the encoder's graph
    # The adversarial term would change the encoder's gradient if it leaked: the check has teeth.
    leak = expected["encoder_if_leaking"]
    assert any(not torch.allclose(g, e, rtol=1e-3, atol=1e-5) for g, e in zip(_grads(tr.nets["encoder"]), leak))


def test_feature_loss_weighs_each_layer_like_dis_l():
    """One layer is Larsen's sum of squares; several are averaged, each rescaled to Dis_l's size."""
    fine_rec, fine_real = torch.full((2, 1, 4, 4), 3.0), torch.full((2, 1, 4, 4), 1.0)  # SSE 64 per image
    coarse_rec, coarse_real = torch.full((2, 1, 2, 2), 2.0), torch.zeros(2, 1, 2, 2)  # SSE 16 per image
    assert float(losses.feature_loss([coarse_rec], [coarse_real])) == 16.0
    # fine layer: 64 * (4 / 16) = 16, coarse: 16; mean 16. Unscaled it would be (64 + 16) / 2 = 40.
    assert float(losses.feature_loss([fine_rec, coarse_rec], [fine_real, coarse_real])) == 16.0
    fine_rec = torch.full((2, 1, 4, 4), 2.0)  # SSE 16 -> 4 after rescaling
    assert float(losses.feature_loss([fine_rec, coarse_rec], [fine_real, coarse_real])) == 10.0
    with pytest.raises(ValueError, match="layers"):
        losses.feature_loss([fine_rec, coarse_rec], [coarse_real])


def test_feature_layers_change_what_the_encoder_learns(tmp_path):
    """loss.feature_layers=2 adds the 16x16 conv's features: the encoder's gradient differs."""
    got = {}
    for layers in (1, 2):
        tr = _trainer(tmp_path / str(layers), f"loss.feature_layers={layers}")
        tr.update(_batch(tr), tr.noise, tr.step, sync=False)
        got[layers] = _grads(tr.nets["encoder"])
    assert any(not torch.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in zip(got[1], got[2]))


def test_discriminator_step_touches_only_the_discriminator(tmp_path):
    tr = _trainer(tmp_path)
    x = _batch(tr)
    b, d = x.shape[0], tr.cfg.model.latent_dim
    fwd = steps.vaegan_forward(tr.nets["encoder"], tr.nets["decoder"], tr.nets["discriminator"], x,
                               tr.noise((b, d)), tr.noise((b, d)), "both", detach_fakes=True)
    logs = steps.discriminator_loss(fwd, tr.cfg.loss)
    tr.update.discriminator_backward(fwd, logs["loss/dis"], train=True)
    assert all(p.grad is None for n in ("encoder", "decoder") for p in tr.nets[n].parameters())
    assert all(p.grad is not None for p in tr.nets["discriminator"].parameters())


def test_each_optimizer_steps_once_per_iteration(tmp_path):
    tr = _trainer(tmp_path, "train.max_steps=3")
    counts = {k: 0 for k in tr.opts}
    for name, opt in tr.opts.items():
        original = opt.step

        def counted(*a, _name=name, _orig=original, **kw):
            counts[_name] += 1
            return _orig(*a, **kw)

        opt.step = counted
    before = {k: [p.detach().clone() for p in v.parameters()] for k, v in tr.nets.items()}
    stream = iter(tr.sampler)
    for _ in range(3):
        tr.train_step(torch.stack([tr.dataset[i] for i in next(stream)]))
    assert counts == {"encoder": 3, "decoder": 3, "discriminator": 3}
    for name, net in tr.nets.items():  # and every network actually moved
        assert any(not torch.equal(a, p) for a, p in zip(before[name], net.parameters())), name


def test_equilibrium_pauses_the_discriminator(tmp_path):
    # A margin of -1 around a target of 10 makes the discriminator "winning" on every batch.
    tr = _trainer(tmp_path, "loss.equilibrium=true", "loss.equilibrium_target=10.0", "loss.equilibrium_margin=0.1")
    d_before = [p.detach().clone() for p in tr.nets["discriminator"].parameters()]
    logs = tr.train_step(torch.stack([tr.dataset[i] for i in range(tr.local_batch)]))
    assert logs["train/dis_updated"] == 0.0
    assert all(torch.equal(a, p) for a, p in zip(d_before, tr.nets["discriminator"].parameters()))


def test_equilibrium_reads_the_cross_entropies_of_every_rank(tmp_path):
    """Under data parallelism the rule decides on the global batch's BCEs, the same on every rank.

    A second rank is simulated by a reduce_sum that adds its BCEs: this rank's alone keep the
    decoder's adversarial term on, the two ranks' mean (fake BCE above target + margin) pauses it."""
    overrides = ("loss.equilibrium=true", "loss.equilibrium_target=0.68", "loss.equilibrium_margin=0.3")
    tr = _trainer(tmp_path / "alone", *overrides)
    alone = tr.update(_batch(tr), tr.noise, tr.step, sync=False).logs
    real, fake = float(alone["dis/bce_real"]), float(alone["dis/bce_fake"])
    assert 0.38 < real < 0.98 and 0.38 < fake < 0.98 and float(alone["weight/adv"]) > 0  # both sides train
    other = torch.tensor([real, 2 * 1.2 - fake, 1.0])  # means: bce_real as here, bce_fake 1.2 > 0.98

    def reduce_sum(values):  # the BCE pair (and a count) gets the other rank's; everything else doubles
        return values + other if values.shape == (3,) else 2 * values

    tr = _trainer(tmp_path / "two", *overrides)
    tr.update.reduce_sum = reduce_sum
    logs = tr.update(_batch(tr), tr.noise, tr.step, sync=False).logs
    assert float(logs["dis/bce_fake"]) == fake  # the logged value stays this rank's
    assert float(logs["weight/adv"]) == 0.0 and float(logs["train/dis_updated"]) == 1.0


def test_adversarial_term_off_before_start_step(tmp_path):
    tr = _trainer(tmp_path, "loss.adv_start_step=5")
    logs = tr.train_step(torch.stack([tr.dataset[i] for i in range(tr.local_batch)]))
    assert logs["weight/adv"] == 0.0 and logs["train/dis_updated"] == 1.0


def test_adaptive_weight_is_the_gradient_norm_ratio(tmp_path):
    tr = _trainer(tmp_path, "loss.adaptive_weight=true")
    logs = tr.train_step(torch.stack([tr.dataset[i] for i in range(tr.local_batch)]))
    assert 0.0 < logs["weight/adv"] < tr.cfg.loss.adaptive_weight_max
    w = torch.randn(3, requires_grad=True)
    assert losses.adaptive_weight((w * 4).sum(), (w * 2).sum(), w).item() == pytest.approx(2.0, rel=1e-3)


def test_vae_step_trains_encoder_and_decoder_on_pixels(tmp_path):
    tr = Trainer(tiny_config("model.kind=vae", "train.precision=fp32"), tmp_path / "run")
    assert set(tr.nets) == {"encoder", "decoder"}
    x = _batch(tr)
    logs = tr.update(x, tr.noise, tr.step, sync=False).logs
    assert logs["loss/total"].item() == pytest.approx(logs["loss/recon"].item() + logs["loss/kl"].item(), rel=1e-5)
    assert all(p.grad is not None for n in tr.nets for p in tr.nets[n].parameters())


def test_warm_start_trains_the_vaegan_as_the_plain_vae(tmp_path):
    """loss.warm_start_steps: before it the encoder and decoder get exactly the plain VAE's
    gradients (pixel likelihood + KL) and the discriminator neither learns nor moves; from it on
    the VAE-GAN iteration runs."""
    tr = _trainer(tmp_path, "loss.warm_start_steps=2", "loss.pixel_weight=1.0")
    x = _batch(tr)
    nets = {k: copy.deepcopy(v) for k, v in tr.nets.items()}
    result = tr.update(x, tr.noise, 0, sync=False)
    assert "loss/recon" in result.logs and "loss/dis" not in result.logs
    assert result.paused == ("discriminator",)
    assert all(p.grad is None for p in tr.nets["discriminator"].parameters())
    posterior = nets["encoder"](x)
    vae = steps.vae_losses(posterior, nets["decoder"](posterior.sample(result.noise["eps"])), x, tr.cfg.loss, 0.7)
    for name in ("encoder", "decoder"):
        expected = torch.autograd.grad(vae["loss/total"], list(nets[name].parameters()), retain_graph=True)
        for g, e in zip(_grads(tr.nets[name]), expected):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4 * float(e.abs().max()))
    for opt in tr.opts.values():
        opt.zero_grad(set_to_none=True)

    d_before = [p.detach().clone() for p in tr.nets["discriminator"].parameters()]
    batch = torch.stack([tr.dataset[i] for i in range(tr.local_batch)])
    logs = tr.train_step(batch)  # step 0: warm
    assert "loss/dis" not in logs and logs["grad_norm/discriminator"] == 0.0
    assert all(torch.equal(a, p) for a, p in zip(d_before, tr.nets["discriminator"].parameters()))
    assert not tr.opts["discriminator"].state  # no Adam/RMSprop moments from the warm start
    tr.train_step(batch)  # step 1: warm
    logs = tr.train_step(batch)  # step 2: the VAE-GAN
    assert logs["train/dis_updated"] == 1.0 and "loss/dis_l" in logs
    assert not all(torch.equal(a, p) for a, p in zip(d_before, tr.nets["discriminator"].parameters()))


@pytest.mark.parametrize("target,paused", [(2.0, True), (0.68, False)])
def test_r1_is_computed_only_when_the_discriminator_trains(tmp_path, monkeypatch, target, paused):
    """The equilibrium rule pausing the discriminator also skips R1's double backward."""
    tr = _trainer(tmp_path, "loss.r1_gamma=1.0", "loss.r1_every_steps=1", "loss.equilibrium=true",
                  f"loss.equilibrium_target={target}", "loss.equilibrium_margin=0.3")
    calls = []
    original = losses.r1_penalty
    monkeypatch.setattr(losses, "r1_penalty", lambda *a: calls.append(1) or original(*a))
    result = tr.update(_batch(tr), tr.noise, tr.step, sync=False)
    assert ("discriminator" in result.paused) is paused
    assert ("dis/r1" in result.logs) is (not paused) and len(calls) == int(not paused)


@pytest.mark.parametrize("kind", ["vae", "vaegan"])
@pytest.mark.parametrize("key,log", [("mmd_weight", "loss/mmd"), ("agg_kl_weight", "loss/agg_kl")])
def test_latent_terms_reach_the_encoder_only(tmp_path, kind, key, log):
    """loss.mmd_weight and agg_kl_weight: the encoder's gradient changes, the decoder's and
    discriminator's do not (same weights, same eps and prior draws: the MMD's own draws come after them)."""
    got = {}
    for weight in (0, 100):
        tr = _trainer(tmp_path / f"{kind}{key}{weight}", f"model.kind={kind}", f"loss.{key}={weight}")
        result = tr.update(_batch(tr), tr.noise, tr.step, sync=False)
        got[weight] = {name: _grads(net) for name, net in tr.nets.items()}, result
    (off, r_off), (on, r_on) = got[0], got[100]
    assert log not in r_off.logs and "z_mmd" not in r_off.noise
    assert ("z_mmd" in r_on.noise) == (key == "mmd_weight")
    assert r_on.logs[log].item() > 0  # untrained codes are far from N(0, I)
    torch.testing.assert_close(r_on.noise["eps"], r_off.noise["eps"], rtol=0, atol=0)
    for name in off:
        same = all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(off[name], on[name]))
        assert same == (name != "encoder"), name
    if kind == "vae":  # the objective the VAE steps on carries the term
        logs = r_on.logs
        expected = logs["loss/recon"] + logs["weight/kl"] * logs["loss/kl"] + 100 * logs[log]
        assert logs["loss/total"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_aggregate_kl_loss_value_and_gradient():
    """Its value is the KL of the running moments; where those equal this batch's own moments
    (B > D, so the batch's covariance is full rank), its gradient in the codes' means and
    log-variances is exactly that of the batch's aggregate KL."""
    gen = torch.Generator().manual_seed(0)
    mean = (torch.randn(64, 6, generator=gen) @ torch.randn(6, 6, generator=gen) + 0.5).requires_grad_()
    logvar = (torch.randn(64, 6, generator=gen) - 1).requires_grad_()
    batch = aggregate_moments(mean.double(), logvar.double().exp())
    direct = gaussian_kl_to_standard(*batch)
    surrogate = losses.aggregate_kl_loss(DiagonalGaussian(mean, logvar), tuple(t.detach() for t in batch))
    assert surrogate.item() == pytest.approx(direct.item(), rel=1e-5)
    grads = torch.autograd.grad(surrogate, [mean, logvar])
    for got, want in zip(grads, torch.autograd.grad(direct, [mean, logvar])):
        torch.testing.assert_close(got, want.float(), rtol=1e-4, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as the trainer calls it: the covariance stays float32
        in_bf16 = losses.aggregate_kl_loss(DiagonalGaussian(mean, logvar), tuple(t.detach() for t in batch))
    for got, want in zip(torch.autograd.grad(in_bf16, [mean, logvar]), grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_running_moments_estimate_and_state():
    """Start at N(0, I)'s moments and move towards the batches'; a state round trip continues
    identically; a saved state of another size is refused by name."""
    gen = torch.Generator().manual_seed(0)
    run = RunningMoments(3, decay=0.9)
    assert torch.equal(run.estimate()[1], torch.eye(3, dtype=torch.float64))
    m, c = torch.randn(3, generator=gen), torch.eye(3) * 2
    run.update(m, c)
    torch.testing.assert_close(run.estimate()[0], 0.1 * m.double())
    torch.testing.assert_close(run.estimate()[1], 1.1 * torch.eye(3, dtype=torch.float64))
    for _ in range(200):
        run.update(m, c)
    torch.testing.assert_close(run.estimate()[1], c.double())  # the start's weight is 0.9^201
    copy_ = RunningMoments(3, decay=0.9)
    copy_.load_state_dict(run.state_dict())
    for r in (run, copy_):
        r.update(m + 1, c)
    assert all(torch.equal(a, b) for a, b in zip(run.estimate(), copy_.estimate()))
    with pytest.raises(ValueError, match=r"saved mean has shape \(3,\).*\(4,\)"):
        RunningMoments(4).load_state_dict(run.state_dict())


def test_aggregate_kl_gradient_whitens_a_correlated_cloud():
    """Descending the aggregate KL alone, with running moments as the trainer keeps them, turns a
    linear "encoder" of fresh noise with shifted, stretched and thin codes (covariance eigenvalues
    0.09 to 11) into one whose codes have about N(0, I)'s moments, in more dimensions (16) than a
    batch has codes (8): no single batch's covariance is invertible. Plain gradient descent: the
    test is of the gradient field (Adam's per-parameter normalisation turns this lone term's
    small, lagged gradients into a random walk; in training the encoder's other terms set its
    scale). Bounds: four seeds ended at eigenvalues 0.71-0.78 and 1.23-1.35, the running
    estimate's own noise (800 codes in 16 dimensions) and lag."""
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(16, 1, generator=gen)
    u = u / u.norm()
    weight = (0.3 * torch.eye(16) + 3 * u @ u.T).requires_grad_()
    bias = torch.ones(16, requires_grad=True)
    opt = torch.optim.SGD([weight, bias], lr=0.01)
    run, logvar = RunningMoments(16), torch.full((8, 16), -30.0)
    for _ in range(2000):
        opt.zero_grad()
        post = DiagonalGaussian(torch.randn(8, 16, generator=gen) @ weight.T + bias, logvar)
        run.update(*aggregate_moments(post.mean.double(), post.logvar.double().exp()))
        losses.aggregate_kl_loss(post, run.estimate()).backward()
        opt.step()
    eig = torch.linalg.eigvalsh(weight.detach() @ weight.detach().T)
    assert bias.detach().abs().max() < 0.2  # from 1
    assert 0.6 < eig.min() and eig.max() < 1.5  # from 0.09 and 11


def test_agg_kl_needs_two_codes_per_process(tmp_path):
    with pytest.raises(ConfigError, match=r"'loss.agg_kl_weight'.*at least 2.*train.batch_size=4 .* = 4"):
        _trainer(tmp_path, "loss.agg_kl_weight=1", "train.batch_size=4", "train.grad_accum_steps=4")


def test_mmd_loss_is_the_unbiased_imq_estimate():
    """By hand on two 1-D points: the within-set terms drop the diagonal, so MMD^2 = k(1) - k(0)."""
    z = torch.tensor([[0.0], [1.0]])
    k0 = float(len(losses.IMQ_SCALES))  # k(a, a) = 1 at every scale
    k1 = sum(2 * s / (2 * s + 1.0) for s in losses.IMQ_SCALES)
    assert losses.mmd_loss(z, z.clone()).item() == pytest.approx(k1 - k0, rel=1e-6)
    with pytest.raises(ValueError, match="B >= 2"):
        losses.mmd_loss(z[:1], z[:1])


def test_mmd_loss_tells_the_prior_from_a_shifted_batch():
    """Unbiased: over many batches from the prior it averages 0 (within 4 standard errors of those
    batches); a batch shifted by half a standard deviation is far outside that spread."""
    gen = torch.Generator().manual_seed(0)
    null = torch.tensor([losses.mmd_loss(torch.randn(64, 16, generator=gen), torch.randn(64, 16, generator=gen)).item()
                         for _ in range(100)])
    assert abs(null.mean()) < 4 * null.std() / 10
    shifted = losses.mmd_loss(torch.randn(64, 16, generator=gen) + 0.5, torch.randn(64, 16, generator=gen)).item()
    assert shifted > null.mean() + 5 * null.std()


def test_mmd_gradient_pulls_codes_onto_the_prior():
    """Descending the MMD alone moves a batch of free codes from N(2, 0.5^2) to about N(0, I)."""
    gen = torch.Generator().manual_seed(0)
    z = (2 + 0.5 * torch.randn(256, 8, generator=gen)).requires_grad_()
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        losses.mmd_loss(z, torch.randn(256, 8, generator=gen)).backward()
        opt.step()
    z = z.detach()
    assert z.mean(0).abs().max() < 0.3  # from 2
    assert 0.7 < z.std(0).min() and z.std(0).max() < 1.3  # from 0.5


def test_mmd_needs_two_codes_per_process(tmp_path):
    """One image per micro-batch has no set of codes to compare: refused before training, by key."""
    with pytest.raises(ConfigError, match=r"'loss.mmd_weight'.*at least 2.*train.batch_size=4 .* = 4"):
        _trainer(tmp_path, "loss.mmd_weight=10", "train.batch_size=4", "train.grad_accum_steps=4")
    assert _trainer(tmp_path / "ok", "loss.mmd_weight=10", "train.batch_size=4", "train.grad_accum_steps=2")
