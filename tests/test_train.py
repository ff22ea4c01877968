"""End to end through the CLI, and the loss falling on a fixed batch."""
import copy
import json

import pytest
import torch

from vaegan.cli import main
from vaegan.images import to_float
from vaegan.training.trainer import Trainer

from conftest import TINY, tiny_config


def test_cli_train_writes_run_folder_then_sample(tmp_path, capsys):
    args = ["train", "--config", "configs/quickstart_vaegan.yaml", *TINY, f"train.out_dir={tmp_path}",
            "train.max_steps=4", "train.checkpoint_every_steps=2", "train.sample_every_steps=2",
            "train.keep_checkpoints=1"]
    assert main(args) == 0
    run = tmp_path / "quickstart_vaegan"
    assert json.loads((run / "config.json").read_text())["model"]["kind"] == "vaegan"
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    for key in ("loss/kl", "loss/dis_l", "loss/gan", "loss/dis", "weight/kl", "weight/adv", "perf/img_per_s",
                "grad_norm/encoder", "grad_norm/discriminator", "dis/acc_real"):
        assert all(key in line for line in lines), key
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-00000004"]  # keep 1
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-00000004"
    for name in ("step-00000002-prior.png", "step-00000002-recon.png", "final-prior.png", "final-recon.png",
                 "final-mixture.png"):
        assert (run / "samples" / name).stat().st_size > 0
    assert (run / "latent_prior.safetensors").is_file()  # fitted at the end (train.prior_components=10)
    assert not list((run / "tb").rglob("events.out.tfevents.*"))  # tensorboard off in TINY

    out = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(run), "--n", "9", "--out", str(out), "--seed", "3"]) == 0
    from PIL import Image

    with Image.open(out) as im:
        assert im.size == (3 * 32 + 4 * 2, 3 * 32 + 4 * 2)

    # A second run into the same folder would overwrite it: refused, nothing lost.
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert len((run / "log.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize("overrides, says", [
    (["train.prior_components=0"], None),
    (["data.num_images=32", "train.prior_components=64"], "no latent prior fitted: 32 training images for "
                                                          "train.prior_components=64"),
])
def test_no_prior_when_off_or_with_too_few_images(tmp_path, capsys, overrides, says):
    Trainer(tiny_config("train.max_steps=1", *overrides), tmp_path / "run").fit()
    assert not (tmp_path / "run" / "latent_prior.safetensors").exists()
    assert not (tmp_path / "run" / "samples" / "final-mixture.png").exists()
    assert (tmp_path / "run" / "samples" / "final-prior.png").is_file()
    assert says is None or says in capsys.readouterr().out


def test_a_failed_prior_fit_does_not_fail_the_trained_run(tmp_path, capsys, monkeypatch):
    def singular(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.cholesky: The factorization could not be completed")

    monkeypatch.setattr("vaegan.storage.prior.fit_gmm", singular)
    result = Trainer(tiny_config("train.max_steps=1"), tmp_path / "run").fit()
    assert result["step"] == 1 and (tmp_path / "run" / "checkpoints" / "latest").is_file()
    assert not (tmp_path / "run" / "latent_prior.safetensors").exists()
    out = capsys.readouterr().out
    assert "no latent prior fitted (" in out and "linalg.cholesky: The factorization" in out
    assert "vaegan fit-prior --checkpoint" in out


def test_tensorboard_events_written(tmp_path):
    cfg = tiny_config("train.max_steps=2", "train.tensorboard=true", "train.log_every_steps=1")
    Trainer(cfg, tmp_path / "run").fit()
    assert list((tmp_path / "run" / "tb").rglob("events.out.tfevents.*"))


def test_loss_falls_on_a_fixed_batch(tmp_path):
    # One batch worth of images: every step sees the same 32 faces.
    cfg = tiny_config("model.kind=vae", "data.num_images=32", "train.max_steps=60", "optim.name=adam",
                      "optim.lr=2e-3", "train.precision=fp32")
    tr = Trainer(cfg, tmp_path / "run")
    tr.fit()
    losses = [json.loads(line)["loss/recon"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_vaegan_feature_loss_falls_on_a_fixed_batch(tmp_path):
    cfg = tiny_config("model.kind=vaegan", "data.num_images=32", "train.max_steps=40", "optim.name=adam",
                      "optim.lr=1e-3", "train.precision=fp32", "loss.adv_start_step=1000")
    Trainer(cfg, tmp_path / "run").fit()
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    kl_feat = [line["loss/dis_l"] for line in lines]
    assert all(line["weight/adv"] == 0.0 for line in lines)
    assert min(kl_feat[-5:]) < max(kl_feat[:5])
    assert torch.isfinite(torch.tensor(kl_feat)).all()


def test_periodic_evaluation_is_logged(tmp_path):
    cfg = tiny_config("train.max_steps=2", "train.eval_every_steps=2", "train.eval_num_images=32")
    Trainer(cfg, tmp_path / "run").fit()
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    evals = [line for line in lines if "eval/psnr" in line]
    assert [line["step"] for line in evals] == [2]
    assert {"eval/SWDx1e3_avg", "eval/hf_ratio", "eval/ssim"} <= evals[0].keys()
    assert 0 < evals[0]["eval/psnr"] < 60


def test_ema_ramps_up_and_its_batchnorm_statistics_match_its_weights(tmp_path):
    from vaegan.training.ema import ema_decay, recalibrate_batchnorm

    assert ema_decay(0.999, 0) == pytest.approx(0.1) and ema_decay(0.999, 10**6) == 0.999
    assert ema_decay(0.999, 600) < 0.99  # 0.999^600 left 55% of the initialisation in the average
    cfg = tiny_config("model.kind=vae", "train.max_steps=40", "train.ema_decay=0.999", "optim.name=adam")
    tr = Trainer(cfg, tmp_path / "run")
    init = [p.detach().clone() for p in tr.ema.modules["decoder"].parameters()]
    tr.fit()
    live = [p.detach() for p in tr.accelerator.unwrap_model(tr.nets["decoder"]).parameters()]
    ema = list(tr.ema.modules["decoder"].parameters())
    to_live = sum(float((e - p).norm()) for e, p in zip(ema, live))
    to_init = sum(float((e - i).norm()) for e, i in zip(ema, init))
    assert to_live < to_init  # without the ramp the copy would still sit near the initial weights

    # Recalibrated statistics are the batch statistics of the averaged encoder's own activations.
    model = tr.inference_model()
    x = to_float(tr.calibration_x)
    first_conv, first_norm = model.encoder.convs[0], model.encoder.norms[0].norm
    with torch.no_grad():
        h = first_conv(x)
    torch.testing.assert_close(first_norm.running_mean, h.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    reference = copy.deepcopy(model).train()  # recomputes what recalibration sees, in train mode
    recalibrate_batchnorm(model.encoder, model.decoder, x[:64], cfg.model.latent_dim)
    assert not torch.allclose(first_norm.running_mean, h.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)

    # The decoder's two sets: the data's from posterior means alone, the prior's from N(0, I)
    # draws alone (one pooled set fits neither: README, "Batch-norm statistics per source").
    with torch.no_grad():
        posterior = reference.encoder(x[:64])
        z_prior = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(0))
        fc = reference.decoder.fc
        h_data, h_prior = (fc(z).view(64, reference.decoder.base, 8, 8) for z in (posterior.mean, z_prior))
    norm = model.decoder.fc_norm.norm
    torch.testing.assert_close(norm.running_mean, h_data.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm.prior_mean, h_prior.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm.prior_var, h_prior.var(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(norm.running_mean, norm.prior_mean, rtol=1e-3, atol=1e-3)


def test_vaegan_training_keeps_the_decoders_prior_statistics_and_samples_use_them(trained_vaegan_run):
    """The VAE-GAN decodes N(0, I) draws every step: the live decoder's prior statistics count every
    step apart from the data's, and ``sample`` decodes with them (``decode`` with the data's)."""
    from vaegan.models.inference import decode_latents, sample
    from vaegan.storage.pretrained import load_pretrained

    raw = load_pretrained(trained_vaegan_run, use_ema=False).vae
    norms = [m.norm for m in (raw.decoder.fc_norm, *raw.decoder.norms)]
    assert all(int(n.prior_batches_tracked) == int(n.num_batches_tracked) == 60 for n in norms)
    model = load_pretrained(trained_vaegan_run).vae  # EMA, recalibrated when saved
    z = torch.randn(8, model.latent_dim, generator=torch.Generator().manual_seed(0))
    drawn = sample(model, 8, seed=0)
    assert torch.equal(drawn, decode_latents(model, z, from_prior=True))
    assert not torch.equal(drawn, decode_latents(model, z))
