"""Tests of vaegan.storage.export and vaegan.storage.pretrained: export folders, loading from runs/checkpoints/exports."""
from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import vaegan
from vaegan.cli import main
from vaegan.config import Config
from vaegan.errors import VaeganError
from vaegan.images import to_float
from vaegan.storage.checkpoint import load_checkpoint, resolve_checkpoint
from vaegan.storage.configs import read_run_config
from vaegan.storage.export import export_model
from vaegan.storage.pretrained import load_pretrained, strip_wrappers


@pytest.fixture(scope="module")
def exported(trained_vaegan_run, tmp_path_factory) -> Path:
    return export_model(trained_vaegan_run, tmp_path_factory.mktemp("export") / "model", with_discriminator=True)


def _z(n: int = 8, d: int = 32) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(1))


def _images(n: int = 8) -> torch.Tensor:
    from vaegan.data import Faces

    faces = Faces(n, 32, split="val")
    return torch.stack([faces[i] for i in range(n)])


def _copy_export(src: Path, dst: Path, tensors: dict | None = None, config: dict | None = None) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    save_file(tensors if tensors is not None else load_file(src / "model.safetensors"), dst / "model.safetensors")
    text = json.dumps(config) if config is not None else (src / "config.json").read_text()
    (dst / "config.json").write_text(text)
    return dst


@torch.no_grad()
def test_export_and_run_give_identical_outputs(trained_vaegan_run, exported):
    run = load_pretrained(trained_vaegan_run, with_discriminator=True)
    exp = load_pretrained(exported, with_discriminator=True)
    z, x = _z(), to_float(_images())
    assert torch.equal(run.vae.decode(z), exp.vae.decode(z))
    prior = run.vae.decode(z, from_prior=True)  # the decoder's statistics of N(0, I) draws travel too
    assert torch.equal(prior, exp.vae.decode(z, from_prior=True)) and not torch.equal(prior, run.vae.decode(z))
    assert torch.equal(run.vae.encode(x).mean, exp.vae.encode(x).mean)
    assert torch.equal(run.vae.encode(x).logvar, exp.vae.encode(x).logvar)
    assert all(map(torch.equal, run.discriminator(x)[1], exp.discriminator(x)[1]))
    assert exp.config.to_dict() == run.config.to_dict()
    assert exp.info["format"] == "export" and exp.info["weights"] == "ema"


def test_export_holds_the_ema_weights_without_wrapper_prefixes(trained_vaegan_run, exported):
    _, state = load_checkpoint(trained_vaegan_run)
    tensors = load_file(exported / "model.safetensors")
    assert not [k for k in tensors if "module." in k or "_orig_mod" in k]
    assert {k.split(".")[0] for k in tensors} == {"encoder", "decoder", "discriminator"}
    ema, raw = state["ema"]["encoder"]["fc.weight"], state["models"]["encoder"]["fc.weight"]
    assert not torch.equal(ema, raw)  # the run's EMA differs from its raw weights, so the check below means something
    assert torch.equal(tensors["encoder.fc.weight"], ema)
    assert torch.equal(tensors["discriminator.fc.weight"], state["models"]["discriminator"]["fc.weight"])
    saved = json.loads((exported / "config.json").read_text())
    assert saved["model"] == state["config"]["model"] and saved["data"] == state["config"]["data"]


def test_export_config_holds_only_the_model_and_data_and_metadata_the_provenance(trained_vaegan_run, exported):
    _, state = load_checkpoint(trained_vaegan_run)
    saved = json.loads((exported / "config.json").read_text())
    assert list(saved) == ["format", "resolution", "model", "data"]
    assert saved["format"] == "vaegan-export-v2" and saved["resolution"] == state["config"]["data"]["resolution"]
    assert saved["model"] == state["config"]["model"] and saved["data"] == state["config"]["data"]
    with safe_open(str(exported / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    train = state["config"]["train"]
    assert meta["format"] == "vaegan-export-v2" and meta["weights"] == "ema" and meta["model_kind"] == "vaegan"
    assert meta["step"] == str(state["step"]) and meta["precision"] == train["precision"]
    assert meta["batch_size"] == str(train["batch_size"])
    assert meta["images_seen"] == str(state["step"] * train["batch_size"])
    info = load_pretrained(exported).info
    assert (info["step"], info["batch_size"], info["images_seen"]) == (state["step"], train["batch_size"],
                                                                       state["step"] * train["batch_size"])
    # Loaded from anywhere, the config is the run's model and data with default training settings.
    run_cfg = load_pretrained(trained_vaegan_run).config
    assert run_cfg.to_dict() == {**Config().to_dict(), "model": saved["model"], "data": saved["data"]}
    assert read_run_config(trained_vaegan_run).to_dict() == state["config"]  # resume reads the whole config


@torch.no_grad()
def test_export_v1_folder_still_loads(exported, tmp_path):
    """v1 exports held the whole training config, possibly with keys this version no longer knows."""
    saved = json.loads((exported / "config.json").read_text())
    old = Config().to_dict()
    old["model"], old["data"] = saved["model"], saved["data"]
    old["train"]["some_old_key"] = 3
    folder = _copy_export(exported, tmp_path / "v1", config=old)
    z, x = _z(), to_float(_images())
    v1, v2 = load_pretrained(folder), load_pretrained(exported)
    assert torch.equal(v1.vae.decode(z), v2.vae.decode(z))
    assert torch.equal(v1.vae.encode(x).mean, v2.vae.encode(x).mean)
    assert v1.config == v2.config
    # ... and exporting it again writes a v2 folder.
    again = json.loads((export_model(folder, tmp_path / "v2") / "config.json").read_text())
    assert again == saved


def test_unknown_or_incomplete_export_config_says_how_to_re_export(exported, tmp_path):
    saved = json.loads((exported / "config.json").read_text())
    for name, config in (("future", {**saved, "format": "vaegan-export-v9"}),
                         ("nomodel", {k: v for k, v in saved.items() if k != "model"}),
                         ("oldnomodel", {"data": saved["data"], "train": {}})):
        folder = _copy_export(exported, tmp_path / name, config=config)
        with pytest.raises(VaeganError) as err:
            load_pretrained(folder)
        message = str(err.value)
        assert f"{name}/config.json" in message and "vaegan export --checkpoint RUN --out DIR" in message, message
        assert isinstance(err.value, ValueError) and ("'vaegan-export-v9'" in message) == (name == "future")
    bad_model = {**saved, "model": {**saved["model"], "no_such_key": 1}}
    with pytest.raises(ValueError, match=r"strict/config\.json: unknown key 'model\.no_such_key'"):
        load_pretrained(_copy_export(exported, tmp_path / "strict", config=bad_model))


def test_export_without_discriminator_and_raw_weights(trained_vaegan_run, tmp_path):
    out = export_model(trained_vaegan_run, tmp_path / "e", use_ema=False)
    tensors = load_file(out / "model.safetensors")
    assert not any(k.startswith("discriminator.") for k in tensors)
    _, state = load_checkpoint(trained_vaegan_run)
    assert torch.equal(tensors["encoder.fc.weight"], state["models"]["encoder"]["fc.weight"])
    with pytest.raises(ValueError, match="no discriminator.*--with-discriminator"):
        load_pretrained(out, with_discriminator=True)
    assert load_pretrained(out, with_discriminator=None).discriminator is None


def test_vae_run_has_no_discriminator_to_export(tmp_path):
    from conftest import tiny_config
    from vaegan.storage.checkpoint import save_checkpoint
    from vaegan.models import build_vae

    cfg = tiny_config("model.kind=vae")
    vae = build_vae(cfg.model, cfg.data.resolution)
    state = {"config": cfg.to_dict(), "step": 0,
             "models": {"encoder": vae.encoder.state_dict(), "decoder": vae.decoder.state_dict()}}
    save_checkpoint(tmp_path / "run", 0, state)
    with pytest.raises(ValueError, match="holds no discriminator.*'vae'"):
        export_model(tmp_path / "run", tmp_path / "e", with_discriminator=True)
    assert load_pretrained(export_model(tmp_path / "run", tmp_path / "e")).info["weights"] == "raw"


def test_loads_run_checkpoint_export_and_weights_file(trained_vaegan_run, exported):
    z = _z()
    ref = load_pretrained(exported).vae.decode(z)
    for path in (trained_vaegan_run, resolve_checkpoint(trained_vaegan_run), exported / "model.safetensors"):
        assert torch.equal(load_pretrained(path).vae.decode(z), ref), path
    vae, cfg, dis, _ = vaegan.load_pretrained(exported, with_discriminator=True)
    assert dis is not None and cfg.model.latent_dim == 32 and not vae.training


def test_wrapper_prefixes_are_stripped_on_load(exported, tmp_path):
    tensors = load_file(exported / "model.safetensors")
    wrapped = {k.replace("encoder.", "encoder._orig_mod.").replace("decoder.", "module.decoder."): v
               for k, v in tensors.items()}
    assert strip_wrappers(wrapped).keys() == tensors.keys()
    folder = _copy_export(exported, tmp_path / "wrapped", wrapped)
    z = _z()
    assert torch.equal(load_pretrained(folder).vae.decode(z), load_pretrained(exported).vae.decode(z))


def test_loading_uses_no_pickle(trained_vaegan_run, exported, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while loading")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(module, name, refuse)
    load_pretrained(exported, with_discriminator=True)
    load_pretrained(trained_vaegan_run, with_discriminator=True)


def test_loading_an_export_imports_no_training_code(exported):
    code = ("import sys, vaegan; vaegan.load_pretrained(sys.argv[1], with_discriminator=True); "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'accelerate' or m in "
            "('vaegan.training.trainer', 'vaegan.training.update', 'vaegan.training.losses', 'vaegan.training.ema')]; print(bad); sys.exit(bool(bad))")
    done = subprocess.run([sys.executable, "-c", code, str(exported)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_truncated_file_is_a_clear_error(exported, tmp_path):
    folder = _copy_export(exported, tmp_path / "t")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors file.*truncated"):
        load_pretrained(folder)


def test_non_safetensors_file_is_a_clear_error(exported, tmp_path):
    folder = _copy_export(exported, tmp_path / "n")
    (folder / "model.safetensors").write_bytes(pickle.dumps({"encoder.fc.weight": [1.0]}))
    with pytest.raises(ValueError, match=r"n/model\.safetensors is not a readable safetensors file"):
        load_pretrained(folder)


def test_other_latent_dim_names_the_tensor_and_shapes(exported, tmp_path):
    config = json.loads((exported / "config.json").read_text())
    config["model"]["latent_dim"] = 16
    folder = _copy_export(exported, tmp_path / "m", config=config)
    with pytest.raises(ValueError) as err:
        load_pretrained(folder)
    message = str(err.value)
    assert "model.safetensors" in message and "'encoder.to_stats.weight'" in message
    assert "(64, 128)" in message and "(32, 128)" in message and "config.json" in message


def test_missing_and_unexpected_tensors_are_named(exported, tmp_path):
    tensors = load_file(exported / "model.safetensors")
    missing = {k: v for k, v in tensors.items() if k != "decoder.to_rgb.bias"}
    expected = r"model\.safetensors: tensor 'decoder\.to_rgb\.bias' is missing \(expected shape \(3,\)"
    with pytest.raises(ValueError, match=expected):
        load_pretrained(_copy_export(exported, tmp_path / "a", missing))
    extra = {**tensors, "encoder.extra.weight": torch.zeros(2)}
    with pytest.raises(ValueError, match="unexpected tensor 'encoder.extra.weight'"):
        load_pretrained(_copy_export(exported, tmp_path / "b", extra))
    stranger = {**tensors, "generator.fc.weight": torch.zeros(2)}
    with pytest.raises(ValueError, match="unexpected tensor 'generator.fc.weight'"):
        load_pretrained(_copy_export(exported, tmp_path / "c", stranger))


def test_checkpoint_that_does_not_fit_its_config_names_the_tensor(trained_vaegan_run, tmp_path):
    import shutil

    folder = tmp_path / "step"
    shutil.copytree(resolve_checkpoint(trained_vaegan_run), folder)
    skeleton = json.loads((folder / "state.json").read_text())
    skeleton["config"]["model"]["enc_fc"] = 64
    (folder / "state.json").write_text(json.dumps(skeleton))
    with pytest.raises(ValueError, match=r"step/state\.safetensors: tensor 'ema\.encoder\.fc\.weight' has shape "
                                         r"\(128, (\d+)\) but the config saved in .*state\.json needs \(64, \1\)"):
        load_pretrained(folder)


def test_export_folder_without_config_is_named(exported, tmp_path):
    folder = _copy_export(exported, tmp_path / "nc")
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"nc/config\.json"):
        load_pretrained(folder)


def test_failed_export_leaves_the_previous_one(exported, tmp_path, monkeypatch, trained_vaegan_run):
    folder = _copy_export(exported, tmp_path / "keep")
    before = (folder / "model.safetensors").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("vaegan.files.save", broken)
    with pytest.raises(OSError):
        export_model(trained_vaegan_run, folder)
    assert (folder / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]


def test_cli_export_then_sample_from_it(trained_vaegan_run, tmp_path):
    out = tmp_path / "exp"
    assert main(["export", "--checkpoint", str(trained_vaegan_run), "--out", str(out), "--with-discriminator"]) == 0
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "README.md", "samples.png",
                                              "reconstructions.png", "latent_prior.safetensors"}  # training fitted it
    assert any(k.startswith("discriminator.") for k in load_file(out / "model.safetensors"))
    assert main(["sample", "--checkpoint", str(out), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert main(["sample", "--checkpoint", str(trained_vaegan_run), "--n", "4", "--out", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "s.png").read_bytes() == (tmp_path / "r.png").read_bytes()
    # The card's samples are what `vaegan sample` draws: from the exported mixture, and it says so.
    assert main(["sample", "--checkpoint", str(out), "--n", "64", "--out", str(tmp_path / "64.png")]) == 0
    assert (tmp_path / "64.png").read_bytes() == (out / "samples.png").read_bytes()
    card = (out / "README.md").read_text()
    assert "drawn from the Gaussian mixture fitted to the training codes" in card and "vaegan.load_prior(" in card
    run = shutil.copytree(trained_vaegan_run, tmp_path / "run")
    (run / "latent_prior.safetensors").unlink()  # a later export of a model without one: no stale prior left
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    assert not (out / "latent_prior.safetensors").exists()
    assert "drawn from N(0, I)" in (out / "README.md").read_text()
    assert main(["sample", "--checkpoint", str(out), "--n", "64", "--out", str(tmp_path / "64.png"),
                 "--prior", "normal"]) == 0
    assert (tmp_path / "64.png").read_bytes() == (out / "samples.png").read_bytes()


def test_cli_reports_a_corrupt_export(exported, tmp_path, capsys):
    folder = _copy_export(exported, tmp_path / "bad")
    (folder / "model.safetensors").write_bytes(b"hello")
    assert main(["sample", "--checkpoint", str(folder), "--n", "1", "--out", str(tmp_path / "s.png")]) == 2
    assert "bad/model.safetensors is not a readable safetensors file" in capsys.readouterr().err


# The export folder as a Hub model repo: model card, grids, metrics, training record.

def _card(folder: Path) -> tuple[dict, str]:
    import yaml

    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


def test_export_folder_is_a_hub_model_repo_with_card_and_grids(trained_vaegan_run, exported):
    from huggingface_hub import ModelCard
    from PIL import Image

    front, body = _card(exported)
    assert front["library_name"] == "vaegan" and front["pipeline_tag"] == "unconditional-image-generation"
    assert {"vae", "gan", "vae-gan", "image-generation"} <= set(front["tags"])
    assert front["license"] == "other" and front["license_name"] == "set-a-license-before-publishing"
    assert "datasets" not in front and "model-index" not in front  # built-in faces; the run was not evaluated
    card = ModelCard((exported / "README.md").read_text())  # the Hub's own parser reads it
    assert card.data.library_name == "vaegan" and card.data.license == "other"
    # How it was trained: from the weights' record and the run's checkpoint config.
    _, state = load_checkpoint(trained_vaegan_run)
    train, loss = state["config"]["train"], state["config"]["loss"]
    for row in (f"| training steps | {state['step']} |", f"| images seen (steps x batch size) | "
                f"{state['step'] * train['batch_size']} |", f"| precision | {train['precision']} |",
                f"| gamma (decoder's weight on rec) | {loss['gamma']} |", f"| adversarial loss | "
                f"{loss['adversarial']}, weight {loss['adv_weight']} |", "| EMA decay | 0.9 |",
                "| resolution | 32x32 |", "| weights | EMA of the training weights |"):
        assert row in body, row
    assert "Not evaluated" in body and "(and the discriminator)" in body
    # The loading example (its samples from the exported prior, as the grid's), the grids beside the card.
    example = body.split("```python\n", 1)[1].split("```", 1)[0].strip()
    lines = example.splitlines()
    assert len(lines) == 4 and 'vaegan.load_pretrained("hf://OWNER/NAME")' in lines[1]
    assert 'vaegan.load_prior("hf://OWNER/NAME", vae.latent_dim, info)' in lines[2]
    run = {}
    exec(example.replace("hf://OWNER/NAME", str(exported)), run)  # as written, with this folder for the repo
    assert torch.equal(run["images"], vaegan.sample(run["vae"], 16, seed=0, prior=run["prior"]))
    assert run["prior"].means.shape[1] == 32
    assert "![prior samples](samples.png)" in body and "![reconstructions](reconstructions.png)" in body
    with Image.open(exported / "samples.png") as im:
        assert im.size == (8 * 34 + 2, 8 * 34 + 2)  # 64 samples of 32 px, 8 per row, 2 px gaps
    with Image.open(exported / "reconstructions.png") as im:
        assert im.size == (8 * 34 + 2, 8 * 34 + 2)  # 32 test images beside their reconstructions


def test_export_grids_are_the_models_samples_and_test_reconstructions(exported):
    from vaegan.data.inputs import read_images
    from vaegan.images import make_grid, pil_to_uint8
    from vaegan.models.inference import reconstruct, sample
    from PIL import Image

    vae, cfg, _, info = load_pretrained(exported)
    mixture = vaegan.load_prior(exported, vae.latent_dim, info)  # training fitted it; the export carries it
    with Image.open(exported / "samples.png") as im:
        assert torch.equal(pil_to_uint8(im.convert("RGB")), make_grid(sample(vae, 64, seed=0, prior=mixture), nrow=8))
    test = read_images("split:test", cfg, limit=32).images
    pairs = torch.stack([test, reconstruct(vae, test)], dim=1).flatten(0, 1)
    with Image.open(exported / "reconstructions.png") as im:
        assert torch.equal(pil_to_uint8(im.convert("RGB")), make_grid(pairs, nrow=8))


def test_export_records_the_runs_loss_settings_and_keeps_them_when_re_exported(trained_vaegan_run, exported,
                                                                               tmp_path):
    _, state = load_checkpoint(trained_vaegan_run)
    for folder in (exported, export_model(exported, tmp_path / "again")):
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            meta = f.metadata()
        assert json.loads(meta["loss"]) == state["config"]["loss"]
        assert json.loads(meta["optim"]) == state["config"]["optim"]
        assert json.loads(meta["train"])["ema_decay"] == 0.9
        assert f"| gamma (decoder's weight on rec) | {state['config']['loss']['gamma']} |" in _card(folder)[1]


def _evaluated_run(trained_vaegan_run, tmp_path) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_vaegan_run, run)
    return run


def test_card_reports_fid_metrics_with_their_protocol(trained_vaegan_run, tmp_path):
    from huggingface_hub.repocard_data import model_index_to_eval_results

    run = _evaluated_run(trained_vaegan_run, tmp_path)
    assert main(["fid", "--checkpoint", str(run), "--num-samples", "16", "--batch-size", "16",
                 "--extractor", "vaegan-random-conv", "--recon", "--out", str(run / "metrics.json")]) == 0
    measured = json.loads((run / "metrics.json").read_text())
    out = export_model(run, tmp_path / "export")
    front, body = _card(out)
    assert json.loads((out / "metrics.json").read_text()) == measured
    assert "fid" in front["metrics"] and "kid" in front["metrics"]
    name, results = model_index_to_eval_results(front["model-index"])
    fids = {r.metric_name: r.metric_value for r in results if r.metric_type == "fid"}
    assert fids["FID"] == pytest.approx(measured["samples"]["fid"], rel=1e-5)
    assert fids["FID of reconstructions"] == pytest.approx(measured["recon"]["fid"], rel=1e-5)
    assert f"| FID | samples | {measured['samples']['fid']:.2f} | lower |" in body
    assert "Protocol: 16 prior samples (latents from seed 0); against 16 reference images" in body
    assert "vaegan-random-conv features" in body and "Not evaluated" not in body


def test_card_picks_its_run_from_a_comparison_and_refuses_one_about_other_models(trained_vaegan_run, tmp_path,
                                                                                 capsys):
    run = _evaluated_run(trained_vaegan_run, tmp_path)
    (tmp_path / "untrained").mkdir()
    other_model = _random_source(tmp_path / "untrained")  # another model to compare with
    report = tmp_path / "report"
    assert main(["summarize", "--runs", str(other_model), str(run), "--names", "other", "vaegan",
                 "--num-images", "16", "--out", str(report)]) == 0
    measured = json.loads((report / "metrics.json").read_text())["runs"]["vaegan"]["metrics"]
    assert measured["psnr"] != json.loads((report / "metrics.json").read_text())["runs"]["other"]["metrics"]["psnr"]
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "export"),
                 "--metrics", str(report / "metrics.json")]) == 0
    front, body = _card(tmp_path / "export")
    values = {m["name"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert values["reconstruction PSNR (dB)"] == pytest.approx(measured["psnr"], rel=1e-5)
    assert values["SWD ×10³ (average over levels)"] == pytest.approx(measured["SWDx1e3_avg"], rel=1e-5)
    assert "fid" not in front["metrics"]  # summarize computes no FID
    # A comparison that does not hold this model: an error when named, left out when only found.
    other = tmp_path / "other"
    assert main(["summarize", "--runs", str(other_model), str(other_model), "--names", "a", "b",
                 "--num-images", "16", "--out", str(other)]) == 0
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "x"),
                 "--metrics", str(other / "metrics.json")]) == 2
    assert "none of them" in capsys.readouterr().err
    (run / "metrics.json").write_text((other / "metrics.json").read_text())
    front, body = _card(export_model(run, tmp_path / "y"))
    assert "model-index" not in front and "Not evaluated" in body and not (tmp_path / "y" / "metrics.json").exists()


def _random_source(folder: Path, *overrides: str) -> Path:
    """An export folder of an untrained tiny model."""
    from vaegan.models import build_vae
    from vaegan.storage.configs import export_config
    from vaegan.storage.export import export_state
    from conftest import tiny_config

    cfg = tiny_config(*overrides)
    save_file(export_state(build_vae(cfg.model, cfg.data.resolution)), folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(export_config(cfg)))
    return folder


def test_celeba_card_names_the_dataset_and_skips_the_grid_it_cannot_make(tmp_path):
    from PIL import Image

    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (178, 218), (40 * i, 90, 160)).save(root / "img_align_celeba" / f"00000{i + 1}.jpg")
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 1\n000003.jpg 2\n")
    src = tmp_path / "src"
    src.mkdir()
    out = export_model(_random_source(src, "data.dataset=celeba", f"data.root={root}"), tmp_path / "export")
    front, body = _card(out)
    assert front["datasets"] == ["celeba"] and "non-commercial research purposes only" in body
    assert (out / "reconstructions.png").is_file() and "held-out images (the test split) of CelebA" in body
    # Exported where CelebA is not: no reconstruction grid (also none left from before), and the card says why.
    root.rename(tmp_path / "elsewhere")
    out = export_model(src, tmp_path / "export")
    front, body = _card(out)
    assert not (out / "reconstructions.png").exists() and "![reconstructions]" not in body
    assert "No reconstruction grid: the model's dataset could not be read when this folder was exported " \
           "(CelebA root not found" in body
    assert (out / "samples.png").is_file() and front["datasets"] == ["celeba"]


def test_card_names_the_feature_layers_of_the_reconstruction_loss():
    from vaegan.config import load_config
    from vaegan.storage import card

    for layers, text in ((1, "Dis_l (discriminator features) + 1.0 x gaussian pixel loss"),
                         (3, "Dis_l and the 2 finer discriminator layers (averaged) + 1.0 x gaussian pixel loss")):
        cfg = load_config(None, ["loss.pixel_weight=1.0", f"loss.feature_layers={layers}"])
        assert ("reconstruction loss", text) in card._loss_rows(cfg, cfg.to_dict()["loss"])


def test_card_names_the_learning_rate_schedule():
    from vaegan.config import load_config
    from vaegan.storage import card

    def lines(*overrides):
        cfg = load_config(None, list(overrides))
        return card._training(cfg, {"weights": "ema"}, cfg.to_dict(), "runs/x")

    assert not any("learning-rate schedule" in line for line in lines())
    assert "| learning-rate schedule | cosine to 0.1 x lr after 50 warm-up steps |" in lines(
        "optim.lr_schedule=cosine", "optim.lr_final=0.1", "optim.lr_warmup_steps=50")
    assert "| learning-rate schedule | constant after 20 warm-up steps |" in lines("optim.lr_warmup_steps=20")


def test_card_names_the_latent_terms_a_run_trained_with():
    """The training table lists the MMD and aggregate-KL terms with their weights when they were on."""
    from vaegan.config import load_config
    from vaegan.storage.card import _loss_rows

    cfg = load_config(None, ["model.kind=vaegan"])
    off = dict(_loss_rows(cfg, cfg.to_dict()["loss"]))
    assert not any("MMD" in k or "aggregate" in k or "prior samples" in k for k in off)
    on = load_config(None, ["model.kind=vaegan", "loss.mmd_weight=30", "loss.agg_kl_weight=2", "loss.prior_adv_weight=3"])
    rows = dict(_loss_rows(on, on.to_dict()["loss"]))
    assert rows["adversarial weight of prior samples"] == "3.0 x reconstructions'"
    assert rows["MMD of the codes against N(0, I)"] == "weight 30.0"
    assert rows["aggregate posterior's KL to N(0, I)"] == "weight 2.0"
