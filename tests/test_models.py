import copy
import json
import math

import pytest
import torch

from vaegan.config import ModelConfig
from vaegan.models import build_decoder, build_discriminator, build_encoder, build_vae
from vaegan.models.distributions import DiagonalGaussian
from vaegan.models.layers import SyncBatchNorm, sync_batchnorm
from vaegan.files import write_safetensors, write_text_atomic
from vaegan.storage.configs import export_config
from vaegan.storage.export import export_state
from vaegan.storage.pretrained import load_pretrained

from conftest import tiny_config


@pytest.mark.parametrize("res", [32, 64, 128])
def test_shapes_and_ranges(res):
    cfg = ModelConfig(latent_dim=16, width=0.25, enc_fc=32, dis_fc=32)
    enc, dec, dis = build_encoder(cfg, res), build_decoder(cfg, res), build_discriminator(cfg, res)
    x = torch.rand(4, 3, res, res) * 2 - 1
    post = enc(x)
    assert post.mean.shape == (4, 16) and post.logvar.shape == (4, 16)
    y = dec(post.sample())
    assert y.shape == (4, 3, res, res) and y.min() >= -1 and y.max() <= 1
    logits, feats = dis(y)
    assert logits.shape == (4,) and feats[-1].shape[0] == 4 and feats[-1].shape[-2:] == (8, 8)
    assert [f.shape[-1] for f in feats] == [res // 2 ** (i + 1) for i in range(len(feats))]  # finest first


def test_larsen_64_architecture():
    """The default 64 px nets are the paper's: widths, 5x5 kernels, Dis_l = 4th conv (8x8x256)."""
    cfg = ModelConfig()
    enc, dec, dis = build_encoder(cfg, 64), build_decoder(cfg, 64), build_discriminator(cfg, 64)
    assert [c.out_channels for c in enc.convs] == [64, 128, 256] and enc.fc.out_features == 1024
    assert all(c.kernel_size == (5, 5) and c.stride == (2, 2) for c in enc.convs)
    assert [c.out_channels for c in dec.deconvs] == [256, 128, 32] and dec.to_rgb.out_channels == 3
    assert dis.conv_in.out_channels == 32 and [c.out_channels for c in dis.convs] == [128, 256, 256]
    assert dis.fc.out_features == 512
    _, feats = dis(torch.zeros(2, 3, 64, 64))
    assert [f.shape for f in feats] == [(2, 128, 32, 32), (2, 256, 16, 16), (2, 256, 8, 8)]
    assert enc.to_stats.out_features == 2 * 128


def test_kl_closed_form_matches_monte_carlo():
    torch.manual_seed(0)
    mean, logvar = torch.randn(3, 5), torch.randn(3, 5) * 0.5
    post = DiagonalGaussian(mean, logvar)
    z = post.mean + post.std * torch.randn(200_000, 3, 5)
    log_q = post.log_prob(z)
    log_p = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
    mc = (log_q - log_p).mean(0)
    torch.testing.assert_close(post.kl(), mc, rtol=0.02, atol=0.02)


def test_kl_zero_at_prior_and_logvar_clamped():
    post = DiagonalGaussian(torch.zeros(2, 4), torch.zeros(2, 4))
    assert torch.allclose(post.kl(), torch.zeros(2))
    wild = DiagonalGaussian(torch.zeros(1, 2), torch.tensor([[-1e4, 1e4]]), -30.0, 20.0)
    assert wild.logvar.tolist() == [[-30.0, 20.0]] and torch.isfinite(wild.kl()).all()


def test_reparameterised_sample_carries_gradient():
    mean = torch.randn(4, 3, requires_grad=True)
    logvar = torch.randn(4, 3, requires_grad=True)
    noise = torch.randn(4, 3)
    z = DiagonalGaussian(mean, logvar).sample(noise)
    z.sum().backward()
    torch.testing.assert_close(mean.grad, torch.ones(4, 3))
    torch.testing.assert_close(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * noise)


def test_sync_batchnorm_is_plain_batchnorm_outside_a_process_group():
    torch.manual_seed(0)
    plain = build_discriminator(ModelConfig(width=0.25, dis_fc=16), 32)
    synced = sync_batchnorm(copy.deepcopy(plain))
    assert any(isinstance(m, SyncBatchNorm) for m in synced.modules())
    assert synced.state_dict().keys() == plain.state_dict().keys()  # checkpoints stay interchangeable
    x = torch.randn(6, 3, 32, 32)
    for a, b in zip(plain(x), synced(x)):
        torch.testing.assert_close(a, b)
    for a, b in zip(plain.state_dict().values(), synced.state_dict().values()):
        torch.testing.assert_close(a, b)  # running statistics updated alike
    with pytest.raises(ValueError, match="3D"):
        synced.norms[0].norm(torch.randn(2, 3, 4))


def test_vae_sample_and_reconstruct_shapes():
    vae = build_vae(ModelConfig(latent_dim=8, width=0.25, enc_fc=16), 32).eval()
    assert vae.sample(3).shape == (3, 3, 32, 32)
    assert vae.reconstruct(torch.zeros(2, 3, 32, 32)).shape == (2, 3, 32, 32)


def test_resize_decoder_and_spectral_norm_discriminator():
    from vaegan.config import ModelConfig
    from vaegan.models import build_decoder, build_discriminator

    cfg = ModelConfig(upsample="resize", dis_spectral_norm=True, dis_norm="none", width=0.25, dis_width=0.5)
    dec = build_decoder(cfg, 32)
    assert dec(torch.randn(2, cfg.latent_dim)).shape == (2, 3, 32, 32)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in dec.modules())
    dis = build_discriminator(cfg, 32)
    assert dis.conv_in.out_channels == 16  # dis_width, not width
    for _ in range(20):  # power iteration converges over forwards in train mode
        dis(torch.randn(4, 3, 32, 32))
    sigma = torch.linalg.matrix_norm(dis.fc.weight.detach(), ord=2)
    assert sigma == pytest.approx(1.0, abs=0.05)


def test_decoder_batchnorm_keeps_the_statistics_of_prior_draws_apart_from_the_datas():
    """Train mode routes each source's batch statistics into its own running set; eval mode
    normalises N(0, I) draws with theirs, and with the data's while none exist yet."""
    torch.manual_seed(0)
    dec = build_decoder(ModelConfig(latent_dim=8, width=0.125), 32)
    norm = dec.fc_norm.norm
    z_data, z_prior = torch.randn(16, 8) * 0.3 + 1.0, torch.randn(16, 8)  # codes unlike N(0, I), and draws
    dec.eval()
    with torch.no_grad():
        assert torch.equal(dec(z_prior), dec(z_prior, from_prior=True))  # no prior statistics yet
        dec.train()
        dec(z_data)
        data_mean, data_var = norm.running_mean.clone(), norm.running_var.clone()
        dec(z_prior, from_prior=True)
        assert torch.equal(norm.running_mean, data_mean) and torch.equal(norm.running_var, data_var)
        h = dec.fc(z_prior).view(16, dec.base, 8, 8)
        torch.testing.assert_close(norm.prior_mean, 0.1 * h.mean((0, 2, 3)))  # momentum 0.1 from zero
        assert (int(norm.num_batches_tracked), int(norm.prior_batches_tracked)) == (1, 1)
        dec.eval()
        out_data, out_prior = dec.fc_norm(h), dec.fc_norm(h, from_prior=True)
    want = torch.nn.functional.batch_norm(h, norm.prior_mean, norm.prior_var, norm.weight, norm.bias, False, 0.0, norm.eps)
    torch.testing.assert_close(out_prior, want)
    assert not torch.allclose(out_data, out_prior)


def test_a_state_saved_without_prior_statistics_loads_and_decodes_as_before(tmp_path):
    """Checkpoints and exports from before the decoder kept prior statistics: the missing buffers
    are filled from the data statistics with a count of 0, so N(0, I) draws decode as they did."""
    cfg = tiny_config()
    torch.manual_seed(0)
    vae = build_vae(cfg.model, cfg.data.resolution)
    for m in vae.decoder.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    old = {k: v for k, v in export_state(vae).items() if ".prior_" not in k}
    assert len(old) < len(export_state(vae))
    write_safetensors(tmp_path / "model.safetensors", old, {"format": "vaegan-export-v2"})
    write_text_atomic(tmp_path / "config.json", json.dumps(export_config(cfg)))
    loaded = load_pretrained(tmp_path).vae
    z = torch.randn(4, cfg.model.latent_dim)
    with torch.no_grad():
        want = vae.eval().decode(z)
        torch.testing.assert_close(loaded.decode(z), want)
        torch.testing.assert_close(loaded.decode(z, from_prior=True), want)
    norm = loaded.decoder.fc_norm.norm
    assert int(norm.prior_batches_tracked) == 0 and torch.equal(norm.prior_mean, norm.running_mean)
