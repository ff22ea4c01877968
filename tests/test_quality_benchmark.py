"""benchmarks/quality.py end to end on the CelebA subset, with tiny models and budget."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import quality  # noqa: E402

TINY = ["model.width=0.25", "model.enc_fc=64", "model.dis_fc=32", "model.latent_dim=16", "train.precision=auto"]


def test_quality_benchmark_trains_both_at_equal_flops_and_reports(celeba_root, tmp_path, capsys):
    sets = [f"{run}:{o}" for run in ("vae", "vaegan") for o in TINY]
    args = ["--out", str(tmp_path), "--root", str(celeba_root), "--resolution", "32", "--budget-pflop", "0.0005",
            "--evals", "2", "--num-images", "64", "--gmm-components", "2", *(a for s in sets for a in ("--set", s))]
    assert quality.main(args) == 0
    report = json.loads((tmp_path / "quality.json").read_text())["results"]
    assert list(report) == ["vae", "vaegan"]
    flops = {name: r["budget"]["step_flops"] * r["budget"]["steps"] for name, r in report.items()}
    step_flops = {name: r["budget"]["step_flops"] for name, r in report.items()}
    assert step_flops["vaegan"] > 2 * step_flops["vae"]  # three networks, two decoder passes
    for name, r in report.items():  # equal compute, to within one step's worth per eval point
        assert abs(flops[name] - 0.0005e15) <= 2 * step_flops[name]
        assert [p["step"] for p in r["curve"]] == [r["budget"]["steps"] // 2, r["budget"]["steps"]]
        for prior in ("normal", "gmm"):
            m = r["curve"][-1][prior]
            assert set(quality.headline(32)) <= set(m)  # every column the report prints is measured
        latent = r["curve"][-1]["latent"]  # the training codes against N(0, I)
        assert latent["aggregate_kl"] > 0 and 0 <= latent["active_units"] <= 16  # latent_dim
    for png in ("samples-normal.png", "samples-gmm.png", "recon.png", "curves.png"):
        assert (tmp_path / png).stat().st_size > 1000, png
    printed = capsys.readouterr().out
    assert "| vaegan |" in printed and "recon_grid_peak_ratio" in printed and "| nan " not in printed  # no cell unmeasured
    # A second call trains nothing and reuses the cached evaluations.
    before = (tmp_path / "runs" / "vae" / "log.jsonl").read_text()
    assert quality.main([*args, "--no-train"]) == 0
    assert (tmp_path / "runs" / "vae" / "log.jsonl").read_text() == before
    # An evaluation cached before the latent statistics existed is redone, not reported without them.
    latent = report["vae"]["curve"][-1]["latent"]
    (cached,) = (tmp_path / "eval").glob(f"vae-step-{report['vae']['curve'][-1]['step']:08d}.json")
    old = json.loads(cached.read_text())
    del old["metrics"]["latent"]
    cached.write_text(json.dumps(old))
    assert quality.main([*args, "--no-train"]) == 0
    assert json.loads(cached.read_text())["metrics"]["latent"] == latent
    # --swd-draws: SWD over several sample sets, the first being the one-draw evaluation's.
    one, one_gmm = (json.loads((tmp_path / "quality.json").read_text())["results"]["vae"]["curve"][-1][prior]
                    for prior in ("normal", "gmm"))
    assert quality.main([*args, "--no-train", "--swd-draws", "3"]) == 0
    three = json.loads((tmp_path / "quality.json").read_text())["results"]["vae"]["curve"][-1]["normal"]
    for level in ("32", "16"):
        mean, sd = three[f"SWDx1e3_{level}"], three[f"SWDx1e3_{level}_sd"]
        assert sd > 0 and mean != one[f"SWDx1e3_{level}"]
        assert abs(one[f"SWDx1e3_{level}"] - mean) <= sd * 2 / 3 ** 0.5 + 1e-9  # any of 3 values lies this near their mean
    assert " ± " in capsys.readouterr().out
    # The other two draws, recomputed here: seeds 1 and 2 of the same protocol.
    checkpoint = quality.list_checkpoints(tmp_path / "runs" / "vae")[-1]
    vae = quality.load_pretrained(checkpoint).vae
    test = quality.CachedImages(tmp_path / "cache" / "celeba32-test.u8")
    reference = test.get_batch(range(min(64, len(test))))
    others = [quality.compute_swd(quality.decode_latents(vae, torch.randn(len(reference), vae.latent_dim,
                                                                          generator=torch.Generator().manual_seed(s)),
                                                         from_prior=True),
                                  reference, seed=s) for s in (1, 2)]
    for level in ("32", "16"):
        expected = (one[f"SWDx1e3_{level}"] + sum(o[f"SWDx1e3_{level}"] for o in others)) / 3
        assert three[f"SWDx1e3_{level}"] == pytest.approx(expected, rel=1e-9)
    # The mixture's draws too: one fit (to the training codes), latents drawn with seeds 0, 1, 2.
    three_gmm = json.loads((tmp_path / "quality.json").read_text())["results"]["vae"]["curve"][-1]["gmm"]
    train = quality.CachedImages(tmp_path / "cache" / "celeba32-train.u8")
    mixture = quality.fit_gmm(quality.encode_images(vae, train.get_batch(range(len(train)))).mean, 2, seed=0)
    others = [quality.compute_swd(quality.decode_latents(vae, mixture.sample(len(reference), torch.Generator().manual_seed(s))),
                                  reference, seed=s) for s in (1, 2)]
    for level in ("32", "16"):
        expected = (one_gmm[f"SWDx1e3_{level}"] + sum(o[f"SWDx1e3_{level}"] for o in others)) / 3
        assert three_gmm[f"SWDx1e3_{level}"] == pytest.approx(expected, rel=1e-9) and three_gmm[f"SWDx1e3_{level}_sd"] > 0
    # A three-draw evaluation cached before the mixture had its spread is redone, not reported without it.
    (cached,) = (tmp_path / "eval").glob(f"vae-step-{report['vae']['curve'][-1]['step']:08d}.json")
    old = json.loads(cached.read_text())
    old["metrics"]["gmm"] = {k: v for k, v in old["metrics"]["gmm"].items() if not k.endswith("_sd")}
    cached.write_text(json.dumps(old))
    assert quality.main([*args, "--no-train", "--swd-draws", "3"]) == 0
    assert json.loads(cached.read_text())["metrics"]["gmm"] == three_gmm
    with pytest.raises(SystemExit):
        quality.parse_args(["--out", str(tmp_path), "--swd-draws", "0"])
    # --recalibrate: both of the decoder's batch-norm sets recomputed from the first 256 training
    # images before evaluating (for checkpoints saved with one pooled set); N(0, I) samples use the prior's.
    assert quality.main([*args, "--no-train", "--recalibrate"]) == 0
    checkpoint = quality.list_checkpoints(tmp_path / "runs" / "vaegan")[-1]
    cached = tmp_path / "eval" / f"vaegan-{checkpoint.name}.json"
    assert json.loads(cached.read_text())["key"]["recalibrate"] is True
    model = quality.load_pretrained(checkpoint).vae
    train = quality.CachedImages(tmp_path / "cache" / "celeba32-train.u8")
    quality.recalibrate_batchnorm(model.encoder, model.decoder, quality.to_float(train.get_batch(range(256))),
                                  model.latent_dim)
    z = torch.randn(64, model.latent_dim, generator=torch.Generator().manual_seed(0))
    images = quality.load_file(str(cached.with_suffix(".safetensors")))
    assert torch.equal(images["normal"], quality.decode_latents(model, z, from_prior=True))
    # A doubled budget continues the finished run (same first points, two more); --train-only trains
    # and stops (nothing evaluated, the report untouched), a --no-train call then reports.
    doubled = [*args[:args.index("--budget-pflop")], "--budget-pflop", "0.001", "--evals", "4",
               *args[args.index("--evals") + 2:]]
    evaluated, reported = sorted((tmp_path / "eval").iterdir()), (tmp_path / "quality.json").read_text()
    assert quality.main([*doubled, "--models", "vae", "--train-only"]) == 0
    assert sorted((tmp_path / "eval").iterdir()) == evaluated and (tmp_path / "quality.json").read_text() == reported
    assert json.loads((tmp_path / "runs" / "vae" / "budget.json").read_text())["finished"]
    assert quality.main([*doubled, "--no-train"]) == 0
    with pytest.raises(SystemExit):
        quality.parse_args(["--out", str(tmp_path), "--no-train", "--train-only"])
    longer = json.loads((tmp_path / "quality.json").read_text())["results"]["vae"]
    steps = report["vae"]["budget"]["steps"]
    assert longer["budget"]["steps"] == 2 * steps and longer["budget"]["finished"]
    assert [p["step"] for p in longer["curve"]] == [steps // 2 * k for k in (1, 2, 3, 4)]
    assert longer["curve"][1]["normal"]["SWDx1e3_32"] == one["SWDx1e3_32"]  # the 1x point, evaluated before
    assert (tmp_path / "runs" / "vae" / "log.jsonl").read_text().startswith(before)


def test_warm_start_steps_are_charged_at_a_vae_steps_cost(celeba_root, tmp_path):
    """loss.warm_start_steps: the budget charges those steps what they cost (no discriminator),
    so the run gets more steps for the same FLOPs, and a warm start larger than the budget is refused."""
    def args(*sets):
        tiny = [a for o in TINY for a in ("--set", f"vaegan:{o}")]
        return quality.parse_args(["--out", str(tmp_path), "--root", str(celeba_root), "--resolution", "32",
                                   "--budget-pflop", "0.002", "--evals", "2", *tiny,
                                   *(a for s in sets for a in ("--set", s))])
    cache = quality.caches(args())["train"]
    plain = quality.budget(args(), "vaegan", cache)
    warm = quality.budget(args("vaegan:loss.warm_start_steps=20"), "vaegan", cache)
    assert warm["warm_steps"] == 20 and warm["warm_step_flops"] < warm["step_flops"] / 2
    assert warm["step_flops"] == plain["step_flops"]
    assert abs(quality.flops_at(warm, warm["steps"]) - 0.002e15) <= 2 * warm["step_flops"]
    assert warm["steps"] > plain["steps"]
    assert quality.flops_at(warm, 10) == 10 * warm["warm_step_flops"]
    too_long = int(0.002e15 / warm["warm_step_flops"]) + 1
    with pytest.raises(SystemExit, match="warm_start_steps"):
        quality.budget(args(f"vaegan:loss.warm_start_steps={too_long}"), "vaegan", cache)


def test_variant_runs_take_their_familys_config_and_their_own_overrides(celeba_root, tmp_path):
    """vae-<variant> is the VAE config (e.g. a second seed of the baseline), vaegan-<variant> the VAE-GAN's."""
    args = quality.parse_args(["--out", str(tmp_path), "--set", "vae-s1:train.seed=1", "--set", "vaegan-s1:train.seed=1"])
    cache = tmp_path / "train.u8"
    for name, kind, seed in (("vae", "vae", 0), ("vae-s1", "vae", 1), ("vaegan", "vaegan", 0), ("vaegan-s1", "vaegan", 1)):
        cfg = quality.model_config(args, name, cache)
        assert (cfg.model.kind, cfg.train.seed, cfg.train.run_name) == (kind, seed, name)
    # --precision sets every run's (fp32 where bf16 is emulated); a run's own --set still wins.
    args = quality.parse_args(["--out", str(tmp_path), "--precision", "fp32", "--set", "vae-s1:train.precision=bf16"])
    assert [quality.model_config(args, n, cache).train.precision for n in ("vae", "vaegan", "vae-s1")] == \
        ["fp32", "fp32", "bf16"]
    assert quality.model_config(quality.parse_args(["--out", str(tmp_path)]), "vae", cache).train.precision == "auto"
    with pytest.raises(SystemExit, match="no runs to report"):
        quality.main(["--out", str(tmp_path / "empty"), "--root", str(celeba_root), "--resolution", "32", "--no-train"])
    for bad in ("vaex", "gan", "vaegan_s1"):
        with pytest.raises(SystemExit, match=f"'{bad}' is not vae, vaegan"):
            quality.main(["--out", str(tmp_path), "--root", str(tmp_path), "--models", bad])


def test_quickstart_presets_train_for_equal_flops(tmp_path):
    """scripts/quickstart.sh compares the two quickstart presets: their training FLOPs (torch's count of one
    step, the benchmark's measure, times max_steps) must match, or its comparison hands one model more compute."""
    root = Path(__file__).resolve().parents[1]
    total = {}
    for kind in ("vae", "vaegan"):
        cfg = quality.load_config(root / "configs" / f"quickstart_{kind}.yaml", ["data.num_images=128"])
        assert cfg.model.kind == kind and cfg.loss.warm_start_steps == 0
        total[kind] = quality.step_flops(cfg, tmp_path / kind) * cfg.train.max_steps
    assert total["vaegan"] == pytest.approx(total["vae"], rel=0.05)  # exact counts; 4.0x per step, 1,000 vs 4,000 steps
