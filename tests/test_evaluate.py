"""Tests for vaegan.evaluation.evaluate, vaegan.evaluation.report and the ``fid`` / ``compare`` commands.

They run on the session-trained fixture runs (32 px faces). FID/KID/PR go through the production
code with the weights-free test extractor; the missing-weights paths use an empty TORCH_HOME and
a download that fails, as on a machine without network.
"""
import hashlib
import json
import math
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
from PIL import Image

import vaegan.metrics as M
from vaegan.cli import main
from vaegan.data import build_dataset
from vaegan.evaluation.evaluate import TEST_EXTRACTOR
from vaegan.metrics.quick import load_images, quick_metrics
from vaegan.models.inference import reconstruct, sample
from vaegan.images import make_grid, pil_to_uint8
from vaegan.storage.pretrained import load_pretrained
from vaegan.evaluation.report import LABEL_PX

ROOT = Path(__file__).resolve().parents[1]
N = 64  # samples per run: one full 8x8 preview grid
NO_DOWNLOAD_KEYS = {"SWDx1e3_32", "SWDx1e3_16", "SWDx1e3_avg", "hf_generated", "hf_reference", "hf_ratio",
                    "grid_peak_generated", "grid_peak_reference", "grid_peak_ratio", "pixel_fd",
                    "recon_hf_ratio", "recon_grid_peak_ratio", "psnr", "ssim"}
FEATURE_KEYS = {"fid", "kid_mean", "kid_std", "precision", "recall"}


@pytest.fixture(autouse=True)
def metrics_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEGAN_CACHE_DIR", str(tmp_path / "metrics-cache"))


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No Inception weights anywhere and no network: an empty TORCH_HOME, downloads fail."""
    torch_home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return torch_home


@pytest.fixture(scope="module")
def compared(trained_vae_run, trained_vaegan_run, tmp_path_factory):
    """`vaegan compare` on the VAE and VAE-GAN fixture runs with the test extractor: (rc, out dir)."""
    out = tmp_path_factory.mktemp("compare") / "report"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAEGAN_CACHE_DIR", str(out.parent / "metrics-cache"))
        rc = main(["compare", "--runs", str(trained_vae_run), str(trained_vaegan_run), "--names", "VAE", "VAE-GAN",
                   "--num-samples", str(N), "--extractor", TEST_EXTRACTOR, "--out", str(out)])
    return rc, out


def held_out_reference(run) -> torch.Tensor:
    """What the protocol must use by default: a fixed subset of the run's held-out (test) split."""
    cfg = load_pretrained(run).config
    return load_images(build_dataset(cfg.data, "test"), N, cfg.data.resolution)


def read_png(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return pil_to_uint8(im.convert("RGB"))


# ----------------------------------------------------------------------------------------------
# vaegan compare.


def test_compare_writes_report_metrics_and_grids(compared):
    rc, out = compared
    assert rc == 0
    record = json.loads((out / "metrics.json").read_text())
    assert list(record["runs"]) == ["VAE", "VAE-GAN"]
    assert record["feature_note"] is None
    assert record["protocol"]["extractor"] == TEST_EXTRACTOR
    assert (record["protocol"]["num_samples"], record["protocol"]["num_reference"]) == (N, N)
    for run in record["runs"].values():
        assert set(run["metrics"]) == FEATURE_KEYS | NO_DOWNLOAD_KEYS
        assert all(math.isfinite(v) for v in run["metrics"].values())
    vae, vaegan = (record["runs"][k]["metrics"] for k in ("VAE", "VAE-GAN"))
    assert vae != vaegan

    report = (out / "report.md").read_text()
    for row in ("FID", "KID", "precision", "recall", "SWD ×10³, 32 px", "SWD ×10³, 16 px", "SWD ×10³, average",
                "sharpness of samples", "reconstruction PSNR", "reconstruction SSIM"):
        line = next(line for line in report.splitlines() if line.startswith(f"| {row}"))
        assert "n/a" not in line
    assert f"| {vae['fid']:.2f} | {vaegan['fid']:.2f} |" in report
    assert "![prior samples](samples.png)" in report and "![reconstructions](recon.png)" in report
    assert "samples.png" in (out / "report.html").read_text()

    grid = 8 * (32 + 2) + 2  # make_grid of 64 images at 32 px
    assert read_png(out / "samples.png").shape == (3, LABEL_PX + grid, 2 * grid + 8)
    assert read_png(out / "recon.png").shape == (3, LABEL_PX + grid, 3 * grid + 2 * 8)


def test_compare_grids_show_seeded_samples_and_held_out_reconstructions(compared, trained_vaegan_run):
    _, out = compared
    model = load_pretrained(trained_vaegan_run).vae  # EMA weights, as the protocol uses
    reference = held_out_reference(trained_vaegan_run)
    grid = 8 * (32 + 2) + 2
    second = slice(grid + 8, 2 * grid + 8)  # the VAE-GAN's panel in samples.png, the VAE's in recon.png
    samples = read_png(out / "samples.png")[:, LABEL_PX:, second]
    assert torch.equal(samples, make_grid(sample(model, N, seed=0)))
    recon = read_png(out / "recon.png")[:, LABEL_PX:]
    assert torch.equal(recon[:, :, :grid], make_grid(reference))
    assert torch.equal(recon[:, :, 2 * (grid + 8):], make_grid(reconstruct(model, reference)))


def test_compare_uses_one_reference_subset_of_the_test_split(compared, trained_vae_run):
    _, out = compared
    record = json.loads((out / "metrics.json").read_text())
    vae, vaegan = (record["runs"][k]["metrics"] for k in ("VAE", "VAE-GAN"))
    assert vae["hf_reference"] == vaegan["hf_reference"]  # the same reference images for both runs
    reference = held_out_reference(trained_vae_run)
    assert record["protocol"]["reference_sha256"] == hashlib.sha256(reference.numpy().tobytes()).hexdigest()
    assert "faces (test)" in record["protocol"]["reference"]

    # Reconstruction metrics pair each held-out image with its own reconstruction.
    model = load_pretrained(trained_vae_run).vae
    expected = M.compute_recon_metrics(reconstruct(model, reference), reference)
    assert vae["psnr"] == pytest.approx(expected["psnr"], rel=1e-9)
    assert vae["ssim"] == pytest.approx(expected["ssim"], rel=1e-9)


def test_compare_without_weights_still_reports_no_download_metrics(offline, tmp_path, trained_vae_run,
                                                                   trained_vaegan_run, capsys):
    out = tmp_path / "report"
    rc = main(["compare", "--runs", str(trained_vae_run), str(trained_vaegan_run), "--num-samples", "32",
               "--out", str(out)])
    assert rc == 0
    record = json.loads((out / "metrics.json").read_text())
    assert list(record["runs"]) == ["vae", "vaegan"]  # both folders are named 'run': model kinds instead
    for run in record["runs"].values():
        assert set(run["metrics"]) == NO_DOWNLOAD_KEYS
    assert M.INCEPTION_FILE in record["feature_note"] and record["protocol"]["extractor"] is None
    report = (out / "report.md").read_text()
    assert "were not computed" in report and "--inception-weights" in report and M.INCEPTION_FILE in report
    assert "| FID ↓ | n/a | n/a |" in report
    assert "Traceback" not in capsys.readouterr().err


def test_compare_rejects_bad_arguments_before_any_work(trained_vae_run, trained_vaegan_run, tmp_path, capsys):
    rc = main(["compare", "--runs", str(trained_vae_run), str(trained_vaegan_run), "--names", "only-one",
               "--no-fid", "--out", str(tmp_path / "r")])
    assert rc == 2 and "--names gives 1 names for 2 runs" in capsys.readouterr().err
    rc = main(["compare", "--runs", str(trained_vae_run), str(tmp_path / "typo"), "--no-fid",
               "--out", str(tmp_path / "r")])
    assert rc == 2 and f"not found: {tmp_path / 'typo'}" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------------------------
# vaegan fid and scripts/compute_fid.py.


def test_fid_without_weights_explains_and_fails(offline, trained_vaegan_run, tmp_path, capsys):
    rc = main(["fid", "--checkpoint", str(trained_vaegan_run), "--num-samples", "16",
               "--out", str(tmp_path / "m.json")])
    captured = capsys.readouterr()
    assert rc != 0
    assert M.INCEPTION_FILE in captured.err and M.INCEPTION_URL in captured.err
    assert "--inception-weights" in captured.err
    assert str(offline / "hub" / "checkpoints") in captured.err  # where to place the file
    assert "Traceback" not in captured.out + captured.err
    assert not (tmp_path / "m.json").exists()


def test_compute_fid_script_matches_vaegan_fid(trained_vaegan_run, tmp_path):
    args = ["--checkpoint", str(trained_vaegan_run), "--num-samples", "48", "--recon", "--extractor", TEST_EXTRACTOR]
    env = {**os.environ, "VAEGAN_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "compute_fid.py"), *args,
                           "--out", str(tmp_path / "script.json")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "FID" in proc.stdout
    assert main(["fid", *args, "--out", str(tmp_path / "cli.json")]) == 0
    script, cli = (json.loads((tmp_path / f).read_text()) for f in ("script.json", "cli.json"))
    assert set(script) == {"checkpoint", "protocol", "samples", "recon"}
    assert set(script["samples"]) == set(script["recon"]) == FEATURE_KEYS
    assert script["protocol"] == cli["protocol"]
    for what in ("samples", "recon"):
        for key, value in cli[what].items():
            assert script[what][key] == pytest.approx(value, rel=1e-6, abs=1e-9)
    assert script["samples"]["fid"] != pytest.approx(script["recon"]["fid"])


# ----------------------------------------------------------------------------------------------
# Functions for the trainer and the quickstart.


def test_quick_metrics_is_seeded_and_leaves_model_and_rng_alone(trained_vae_run):
    model, cfg, _, _ = load_pretrained(trained_vae_run)
    reference = load_images(build_dataset(cfg.data, "val"), 30, 32)
    model.train()  # as the trainer would call it
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()

    first = quick_metrics(model, reference, num_images=24, seed=3)
    assert set(first) == NO_DOWNLOAD_KEYS
    assert quick_metrics(model, reference, num_images=24, seed=3) == first
    assert quick_metrics(model, reference, num_images=24, seed=4)["SWDx1e3_avg"] != first["SWDx1e3_avg"]

    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # e.g. BatchNorm statistics
    assert torch.equal(torch.get_rng_state(), rng)
    model.eval()
    expected = M.compute_recon_metrics(reconstruct(model, reference[:24]), reference[:24])
    assert first["psnr"] == pytest.approx(expected["psnr"], rel=1e-9)


def test_summarize_prints_one_line_per_run_and_writes_the_report(trained_vae_run, trained_vaegan_run, tmp_path,
                                                                 capsys):
    out = tmp_path / "summary"
    assert main(["summarize", "--runs", str(trained_vae_run), str(trained_vaegan_run), "--num-images", "32",
                 "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    record = json.loads((out / "metrics.json").read_text())
    assert lines[0].split() == ["run", "sharpness", "grid", "peaks", "SWDx1e3@32", "SWDx1e3@16", "SWDx1e3", "avg",
                                "PSNR", "dB", "recon", "peaks"]
    for line, (name, run) in zip(lines[1:3], record["runs"].items()):
        m = run["metrics"]
        assert line.split()[0] == name
        values = [float(v) for v in line.split()[1:]]
        assert values == pytest.approx([m["hf_ratio"], m["grid_peak_ratio"], m["SWDx1e3_32"], m["SWDx1e3_16"],
                                        m["SWDx1e3_avg"], m["psnr"], m["recon_grid_peak_ratio"]],
                                       abs=1e-3)  # every pyramid level, finest first
        assert "fid" not in m
    assert record["protocol"]["num_samples"] == 32 and (out / "report.md").is_file()



def test_prior_gmm_evaluates_each_run_on_latents_from_its_fitted_mixture(trained_vae_run, trained_vaegan_run,
                                                                         tmp_path, capsys):
    """`--prior gmm` (summarize, compare, fid): each run's samples are drawn from its own mixture, the
    record and the report say so; a run without a mixture for its weights fails before any work."""
    import shutil

    from vaegan.storage.prior import PRIOR_FILE, load_prior

    out = tmp_path / "summary"
    runs = [str(trained_vae_run), str(trained_vaegan_run)]
    assert main(["summarize", "--runs", *runs, "--num-images", "32", "--prior", "gmm", "--out", str(out)]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["protocol"]["prior"] == "gmm"
    assert "latents from the run's Gaussian mixture fitted to its training codes, seed 0" in \
        (out / "report.md").read_text()
    grid = 4 * (32 + 2) + 2  # make_grid of 32 images at 32 px: 8 per row, 4 rows
    panel = read_png(out / "samples.png")[:, LABEL_PX:LABEL_PX + grid, 8 * (32 + 2) + 2 + 8:]
    model, _, _, info = load_pretrained(trained_vaegan_run)
    assert torch.equal(panel, make_grid(sample(model, 32, seed=0, prior=load_prior(trained_vaegan_run, 32, info))))
    assert not torch.equal(panel, make_grid(sample(model, 32, seed=0)))

    bare = shutil.copytree(trained_vae_run, tmp_path / "bare")
    (bare / PRIOR_FILE).unlink()
    capsys.readouterr()
    assert main(["summarize", "--runs", str(bare), runs[1], "--num-images", "32", "--prior", "gmm"]) == 2
    err = capsys.readouterr().err
    assert f"no fitted latent prior at {bare / PRIOR_FILE}" in err and "vaegan fit-prior" in err
