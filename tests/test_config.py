from pathlib import Path

import pytest

from vaegan.config import Config, ConfigError, from_dict, load_config, parse_override


def test_defaults_are_larsens_recipe():
    cfg = Config()
    assert (cfg.model.latent_dim, cfg.model.enc_fc, cfg.model.dis_fc) == (128, 1024, 512)
    assert cfg.optim.name == "rmsprop" and cfg.loss.fake_sources == "both"


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("model:\n  latent_dim: 64\nloss:\n  gamma: 0.5\n")
    cfg = load_config(f, ["loss.gamma=1e-3", "train.precision=bf16", "data.hflip=true"])
    assert cfg.model.latent_dim == 64 and cfg.loss.gamma == 0.001
    assert cfg.train.precision == "bf16" and cfg.data.hflip is True
    assert cfg.train.run_name == "exp"


def test_unknown_key_names_it_and_lists_valid_ones():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["loss.gama=1"])
    assert "loss.gama" in str(e.value) and "gamma" in str(e.value) and "beta" in str(e.value)


def test_unknown_section():
    with pytest.raises(ConfigError, match="unknown section 'optimiser'.*optim"):
        load_config(None, ["optimiser.lr=1"])


def test_bad_type_and_bad_choice():
    with pytest.raises(ConfigError, match="train.max_steps.*expected int.*'many'"):
        load_config(None, ["train.max_steps=many"])
    with pytest.raises(ConfigError, match=r"loss.adversarial.*'wgan'.*\['original', 'nonsaturating', 'hinge'\]"):
        load_config(None, ["loss.adversarial=wgan"])
    with pytest.raises(ConfigError, match="train.batch_size.*> 0"):
        load_config(None, ["train.batch_size=0"])
    with pytest.raises(ConfigError, match=r"loss.dis_augment.*\['blur'\].*color, translation, cutout"):
        load_config(None, ["loss.dis_augment=color,blur"])
    assert load_config(None, ["loss.dis_augment=color, translation"]).loss.dis_augment  # spaces as augment.parse reads them


def test_bad_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    bad.write_text("model:\n  nonsense: 1\n")
    with pytest.raises(ConfigError, match=str(bad)):
        load_config(bad)


def test_override_syntax():
    assert parse_override("model.width=0.5") == {"model": {"width": 0.5}}
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("width=0.5")
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("model.width")


def test_round_trip_through_dict():
    cfg = load_config(None, ["model.kind=vae", "loss.recon=l1"])
    assert from_dict(cfg.to_dict()) == cfg


def test_celeba_needs_a_root():
    with pytest.raises(ConfigError, match="data.root"):
        load_config(None, ["data.dataset=celeba"])


PRESETS = sorted(p.stem for p in (Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_every_preset_is_tested():
    assert {"celeba64_vaegan", "celeba64_vaegan_plus", "celeba64_vae", "quickstart_vaegan",
            "quickstart_vaegan_larsen", "quickstart_vae"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load(name):
    path = Path(__file__).parents[1] / "configs" / f"{name}.yaml"
    overrides = ["data.root=/some/celeba"] if name.startswith("celeba") else []
    cfg = load_config(path, overrides)
    assert cfg.model.kind == ("vae" if name.endswith("_vae") else "vaegan")


def test_user_facing_errors_share_one_base_class():
    from vaegan.errors import InputError, MissingFileError, VaeganError
    from vaegan.metrics import MissingWeightsError
    from vaegan.training.trainer import TrainingDiverged

    for error in (ConfigError, TrainingDiverged, MissingWeightsError, InputError, MissingFileError):
        assert issubclass(error, VaeganError), error
    # ... and stay what callers caught before.
    assert issubclass(ConfigError, ValueError) and issubclass(InputError, ValueError)
    assert issubclass(MissingFileError, FileNotFoundError) and issubclass(TrainingDiverged, RuntimeError)
    assert issubclass(MissingWeightsError, RuntimeError)


def test_cli_prints_user_errors_in_one_line_and_exits_2(tmp_path, capsys):
    from vaegan.cli import main

    config = tmp_path / "exp.yaml"
    config.write_text("train:\n  max_steps: 1\n")
    assert main(["train", "--config", str(config), f"train.out_dir={tmp_path}", "model.no_such_key=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaegan train: error: ") and "'model.no_such_key'" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "exp").exists()

    missing = tmp_path / "no-such-run"
    assert main(["sample", "--checkpoint", str(missing), "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaegan sample: error: ") and str(missing) in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_keeps_the_traceback_of_a_bug(monkeypatch):
    from vaegan.cli import main

    def bug(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr("vaegan.tools.generate.sample_to_files", bug)
    with pytest.raises(KeyError, match="a bug"):
        main(["sample", "--checkpoint", "anything", "--out", "s.png"])


@pytest.mark.parametrize("override, rule", [
    ("optim.lr=.inf", "a finite number"), ("loss.beta=.nan", "a finite number"), ("model.logvar_max=.inf", "a finite number"),
    ("optim.grad_clip=-.inf", "a finite number"), ("loss.gamma=-0.1", ">= 0"), ("optim.eps=0", "> 0"),
    ("optim.lr_dis=-1e-4", ">= 0"), ("optim.beta1=1", r"in \[0, 1\)"), ("optim.alpha=-0.1", r"in \[0, 1\)"),
    ("train.checkpoint_every_steps=-1", ">= 0"), ("train.keep_checkpoints=-1", ">= 0"),
    ("train.sample_every_steps=-5", ">= 0"), ("train.eval_every_steps=-1", ">= 0"),
    ("train.log_every_steps=0", "> 0"), ("train.max_nonfinite_steps=0", "> 0"), ("train.eval_num_images=0", "> 0"),
    ("train.seed=-1", ">= 0"), ("data.seed=-3", ">= 0"), ("data.num_images=0", "> 0"), ("data.crop=-1", ">= 0"),
    ("data.crop_top=-2", ">= -1"), ("model.enc_fc=0", "> 0"), ("loss.kl_warmup_steps=-1", ">= 0"),
    ("loss.adaptive_weight_max=0", "> 0"), ("loss.feature_layers=0", "> 0"), ("loss.mmd_weight=-1", ">= 0"), ("loss.agg_kl_weight=-1", ">= 0"),
    ("loss.prior_adv_weight=-1", ">= 0"), ("train.prior_components=-1", ">= 0"), ("train.prior_images=0", "> 0"),
    ("optim.lr_warmup_steps=-1", ">= 0"), ("optim.lr_final=1.5", r"in \[0, 1\]"), ("optim.lr_final=-0.1", r"in \[0, 1\]"),
])
def test_numbers_out_of_range_name_the_key(override, rule):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"'{key}': must be {rule}"):
        load_config(None, [override])


@pytest.mark.parametrize("sources", ["recon", "prior"])
def test_prior_adv_weight_needs_both_fake_sources(sources):
    assert load_config(None, ["loss.prior_adv_weight=3"]).loss.prior_adv_weight == 3.0
    assert load_config(None, [f"loss.fake_sources={sources}"]).loss.prior_adv_weight == 1.0
    with pytest.raises(ConfigError, match=f"'loss.prior_adv_weight'.*fake_sources=both, got '{sources}'"):
        load_config(None, [f"loss.fake_sources={sources}", "loss.prior_adv_weight=3"])


@pytest.mark.parametrize("resolution, most", [(32, 2), (64, 3), (128, 4)])
def test_feature_layers_at_most_the_discriminators_stride2_convs(resolution, most):
    assert load_config(None, [f"data.resolution={resolution}", f"loss.feature_layers={most}"]).loss.feature_layers == most
    with pytest.raises(ConfigError, match=f"'loss.feature_layers': at most {most} at data.resolution={resolution}.*got {most + 1}"):
        load_config(None, [f"data.resolution={resolution}", f"loss.feature_layers={most + 1}"])


def test_zero_means_off_where_documented():
    cfg = load_config(None, ["train.checkpoint_every_steps=0", "train.keep_checkpoints=0", "train.sample_every_steps=0",
                             "data.crop_top=-1", "loss.beta=0", "optim.lr_dis=0"])
    assert cfg.train.keep_checkpoints == 0 and cfg.data.crop_top == -1


@pytest.mark.parametrize("text", ["", "\n", "# nothing but a comment\n", "{}\n", "null\n"])
def test_empty_config_file_is_refused(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"{path} holds no settings"):
        load_config(path)
