"""The ex-post latent density: EM recovers a known mixture; sampling, densities and files."""
import math

import pytest
import torch

from vaegan.models.gmm import GaussianMixture, fit_gmm


def _two_clusters(n=3000, d=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n // 3, d, generator=gen) * 0.3 + 2.0
    b = torch.randn(n - n // 3, d, generator=gen) * 0.6 - 1.0
    return torch.cat([a, b])


def test_em_recovers_weights_means_and_scales():
    mix = fit_gmm(_two_clusters(), components=2)
    order = mix.means[:, 0].argsort(descending=True)
    torch.testing.assert_close(mix.weights[order], torch.tensor([1 / 3, 2 / 3], dtype=torch.float64), atol=0.01, rtol=0)
    torch.testing.assert_close(mix.means[order].mean(1), torch.tensor([2.0, -1.0], dtype=torch.float64), atol=0.05, rtol=0)
    stds = mix.scale_tril[order].diagonal(dim1=-2, dim2=-1).mean(1)
    torch.testing.assert_close(stds, torch.tensor([0.3, 0.6], dtype=torch.float64), atol=0.03, rtol=0)


def test_log_prob_of_one_component_is_the_gaussian_density():
    mix = GaussianMixture(torch.ones(1), torch.zeros(1, 3), torch.eye(3)[None] * 2)
    z = torch.randn(5, 3)
    expected = -0.5 * (z / 2).pow(2).sum(1) - 3 * math.log(2) - 1.5 * math.log(2 * math.pi)
    torch.testing.assert_close(mix.log_prob(z), expected.double())


def test_samples_follow_the_fit_and_repeat_with_the_seed(tmp_path):
    data = _two_clusters()
    mix = fit_gmm(data, components=2)
    s = mix.sample(4000, torch.Generator().manual_seed(1))
    assert torch.equal(s, mix.sample(4000, torch.Generator().manual_seed(1)))
    torch.testing.assert_close(s.mean(0), data.mean(0), atol=0.08, rtol=0)
    assert mix.log_prob(s).mean() > mix.log_prob(torch.randn(4000, 6) * 3).mean() + 1
    path = mix.save(tmp_path / "prior.safetensors")
    loaded = GaussianMixture.load(path)
    assert torch.equal(loaded.sample(10, torch.Generator().manual_seed(2)), mix.sample(10, torch.Generator().manual_seed(2)))


def test_too_few_latents_is_a_clear_error():
    with pytest.raises(ValueError, match="3 latents cannot fit 10"):
        fit_gmm(torch.randn(3, 4), components=10)


def test_training_fits_the_prior_that_sample_uses_by_default(trained_vae_run, tmp_path, capsys):
    """The run's end fits a mixture to the training codes for its final weights; ``vaegan sample``
    draws from it by default (the same images as --prior gmm, not N(0, I)'s) and from N(0, I),
    saying so, when there is none; fit-prior fits one again; an export carries it."""
    import shutil

    from vaegan.cli import main
    from vaegan.files import read_safetensors
    from vaegan.storage.prior import PRIOR_FILE, load_prior
    from vaegan.storage.pretrained import load_pretrained

    run = shutil.copytree(trained_vae_run, tmp_path / "run")
    vae, cfg, _, info = load_pretrained(run)
    _, meta = read_safetensors(run / PRIOR_FILE)
    assert (meta["step"], meta["weights"], meta["components"]) == (str(info["step"]), "raw", "10")
    assert meta["images"] == str(cfg.data.num_images)
    assert (run / "samples" / "final-mixture.png").stat().st_size > 0
    mixture = load_prior(run, vae.latent_dim, info)
    # The mixture sits where the training codes are, which is not where N(0, I) puts its mass.
    from vaegan.data import build_dataset
    from vaegan.models.inference import encode_images

    dataset = build_dataset(cfg.data, split="train")
    codes = encode_images(vae, torch.stack([dataset[i] for i in range(400)])).mean.double()
    assert mixture.log_prob(codes).mean() > mixture.log_prob(torch.randn(400, vae.latent_dim)).mean()

    def sample(name, *flags):
        assert main(["sample", "--checkpoint", str(run), "--n", "16", "--out", str(tmp_path / name), *flags]) == 0
        return (tmp_path / name).read_bytes(), capsys.readouterr().out

    default, said = sample("a.png")
    assert "latents from the Gaussian mixture" in said and str(run / PRIOR_FILE) in said
    assert default == sample("g.png", "--prior", "gmm")[0]
    normal, said = sample("n.png", "--prior", "normal")
    assert normal != default and "latents from N(0, I)" in said

    (run / PRIOR_FILE).unlink()
    assert main(["sample", "--checkpoint", str(run), "--prior", "gmm", "--out", str(tmp_path / "x.png")]) == 2
    assert "vaegan fit-prior --checkpoint" in capsys.readouterr().err
    fallback, said = sample("f.png")
    assert fallback == normal and f"no fitted latent prior at {run / PRIOR_FILE}" in said

    assert main(["fit-prior", "--checkpoint", str(run), "--components", "3", "--num-images", "400"]) == 0
    mixture = load_prior(run, vae.latent_dim, info)
    assert mixture.means.shape == (3, vae.latent_dim)
    torch.testing.assert_close((mixture.weights[:, None] * mixture.means).sum(0), codes.mean(0), atol=1e-3, rtol=0)
    assert sample("b.png")[0] not in (default, normal)
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "export")]) == 0
    (exported, exported_meta), (fitted, fitted_meta) = (read_safetensors(p / PRIOR_FILE) for p in (tmp_path / "export", run))
    assert exported_meta == fitted_meta and all(torch.equal(exported[k], fitted[k]) for k in fitted)
    assert main(["sample", "--checkpoint", str(tmp_path / "export"), "--out", str(tmp_path / "e.png")]) == 0
    assert "latents from the Gaussian mixture" in capsys.readouterr().out


def test_sample_refuses_a_prior_fitted_for_other_weights_or_another_step(trained_vaegan_run, tmp_path, capsys):
    """The prior file is the run's: one fitted for the EMA does not serve --no-ema, and one fitted
    before training went on does not serve the new step; both say which and how to fit it again."""
    import shutil

    from vaegan.cli import main
    from vaegan.files import read_safetensors, write_safetensors
    from vaegan.storage.prior import PRIOR_FILE

    run = shutil.copytree(trained_vaegan_run, tmp_path / "run")
    assert read_safetensors(run / PRIOR_FILE)[1]["weights"] == "ema"  # what training fitted it for
    sample = lambda *flags: main(["sample", "--checkpoint", str(run), "--prior", "gmm", "--n", "4",
                                  "--out", str(tmp_path / "s.png"), *flags])
    assert main(["fit-prior", "--checkpoint", str(run), "--components", "2", "--num-images", "200"]) == 0
    capsys.readouterr()
    assert sample() == 0
    assert sample("--no-ema") == 2
    err = capsys.readouterr().err
    assert "(ema weights)" in err and "(raw weights)" in err and f"fit-prior --checkpoint {run} --no-ema" in err
    assert main(["fit-prior", "--checkpoint", str(run), "--components", "2", "--num-images", "200", "--no-ema"]) == 0
    assert sample("--no-ema") == 0
    assert sample() == 2 and "(raw weights), but" in capsys.readouterr().err

    tensors, meta = read_safetensors(run / PRIOR_FILE)  # as if training had gone on after the fit
    write_safetensors(run / PRIOR_FILE, tensors, {**meta, "step": str(int(meta["step"]) - 10)})
    assert sample("--no-ema") == 2
    assert f"fitted for step {int(meta['step']) - 10} (raw weights), but {run} gives step {meta['step']}" in \
        capsys.readouterr().err
    # Without --prior gmm the stale prior is passed over for N(0, I), and the line says why.
    auto = lambda name, *flags: main(["sample", "--checkpoint", str(run), "--n", "4", "--no-ema",
                                      "--out", str(tmp_path / name), *flags])
    assert auto("auto.png") == 0
    said = capsys.readouterr().out
    assert "latents from N(0, I), not the fitted prior" in said and f"fitted for step {int(meta['step']) - 10}" in said
    assert auto("normal.png", "--prior", "normal") == 0
    assert (tmp_path / "auto.png").read_bytes() == (tmp_path / "normal.png").read_bytes()


def test_a_resumed_run_fits_its_prior_again_for_the_new_final_step(tmp_path):
    from conftest import tiny_config
    from vaegan.files import read_safetensors
    from vaegan.storage.prior import PRIOR_FILE
    from vaegan.training.trainer import Trainer

    run = tmp_path / "run"
    Trainer(tiny_config("train.max_steps=2", "data.num_images=64", "train.prior_components=2"), run).fit()
    assert read_safetensors(run / PRIOR_FILE)[1]["step"] == "2"
    Trainer(tiny_config("train.max_steps=4", "data.num_images=64", "train.prior_components=2"), run, resume=True).fit()
    _, meta = read_safetensors(run / PRIOR_FILE)
    assert (meta["step"], meta["weights"], meta["components"], meta["images"]) == ("4", "raw", "2", "64")
