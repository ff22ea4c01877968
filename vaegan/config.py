"""Typed configuration: dataclasses loaded from YAML, overridable as ``section.key=value``.

A config is four sections plus the model kind. Every key is validated: an unknown key or a
value of the wrong type raises :class:`ConfigError` naming the key and what is valid.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vaegan.errors import VaeganError


class ConfigError(VaeganError, ValueError):
    """A config file, key or value that cannot be used; the message names it."""


@dataclass
class DataConfig:
    dataset: str = "faces"  # faces (built-in, procedural) | celeba | folder
    root: str = ""  # celeba: folder holding img_align_celeba/; folder: any image folder
    split: str = "train"  # celeba: train | val | test | all
    resolution: int = 64  # output side in pixels: 32, 64 or 128
    crop: int = 148  # celeba: square crop side before resizing (0: no crop)
    crop_top: int = 40  # celeba: crop's top row (-1: centred); Larsen's crop is rows 40:188
    crop_left: int = -1  # celeba: crop's left column (-1: centred)
    num_images: int = 20000  # faces: how many images the built-in dataset holds
    seed: int = 0  # faces: generator seed (same seed, same images)
    hflip: bool = False  # random horizontal flips while training
    skip_bad_images: bool = False  # skip and count unreadable images instead of failing
    cache: str = ""  # path of a prepared uint8 cache (vaegan prepare); used when it exists
    num_workers: int | str = "auto"  # DataLoader workers: auto (0 for a prepared cache or a small CPU) or a number


@dataclass
class ModelConfig:
    kind: str = "vaegan"  # vaegan (Larsen et al. 2016) | vae (plain baseline, same nets)
    latent_dim: int = 128
    width: float = 1.0  # channel multiplier on every conv layer
    enc_fc: int = 1024  # encoder's hidden FC width (Larsen's released code: 1024)
    dis_fc: int = 512
    norm: str = "batch"  # batch | group | none
    dis_width: float = 0.0  # the discriminator's channel multiplier (0: same as width)
    dis_norm: str = ""  # the discriminator's norm: batch | group | none ("": same as norm)
    dis_spectral_norm: bool = False  # spectral normalisation of every discriminator layer
    upsample: str = "deconv"  # decoder: deconv (Larsen: 5x5 stride-2 transposed convs) | resize (nearest 2x + 3x3 conv)
    logvar_min: float = -30.0
    logvar_max: float = 20.0


@dataclass
class LossConfig:
    recon: str = "gaussian"  # plain VAE pixel likelihood: gaussian | l1 | bernoulli
    beta: float = 1.0  # weight of the KL term
    gamma: float = 1e-2  # decoder's weight on the Dis_l feature loss against its GAN loss
    adversarial: str = "original"  # original | nonsaturating | hinge
    fake_sources: str = "both"  # what the discriminator sees as fake: recon | prior | both
    pixel_weight: float = 0.0  # VAE-GAN: add this times the pixel likelihood (loss.recon) to Dis_l
    feature_layers: int = 1  # VAE-GAN: Dis_l averaged with the next finer stride-2 convs (1: Dis_l alone; at most 2/3/4 at 32/64/128 px)
    r1_gamma: float = 0.0  # R1 penalty gamma/2 * |grad_x D(x)|^2 on real images (0: off)
    r1_every_steps: int = 16  # lazy R1: applied every this many steps, scaled up to match
    dis_augment: str = ""  # differentiable augmentation of what the discriminator reads: comma list of color, translation, cutout
    adv_weight: float = 1.0  # the decoder's adversarial weight (a multiplier on the adaptive one)
    prior_adv_weight: float = 1.0  # fake_sources=both: the decoder's adversarial gradient at prior samples is multiplied by this (after the adaptive weight)
    adaptive_weight: bool = False  # scale the GAN term by the ratio of last-layer grad norms
    adaptive_weight_max: float = 1e4
    adv_start_step: int = 0  # the decoder gets no adversarial term before this step (the discriminator trains from step 0)
    warm_start_steps: int = 0  # VAE-GAN: the first N steps train encoder and decoder as the plain VAE (loss.recon + KL; no discriminator, at a VAE step's cost)
    kl_warmup_steps: int = 0  # KL weight ramps linearly from 0 to beta over these steps
    mmd_weight: float = 0.0  # encoder: this times the MMD between the batch's codes and N(0, I) draws (InfoVAE/WAE; 0: off)
    agg_kl_weight: float = 0.0  # encoder: this times the aggregate posterior's KL to N(0, I), from running moments (0: off)
    equilibrium: bool = False  # Larsen's released code: skip updates of a side that is too far ahead
    equilibrium_target: float = 0.68  # target discriminator BCE (about ln 2)
    equilibrium_margin: float = 0.35


@dataclass
class OptimConfig:
    name: str = "rmsprop"  # rmsprop (Larsen) | adam
    lr: float = 3e-4
    lr_dis: float = 0.0  # 0: same as lr
    lr_schedule: str = "constant"  # constant | cosine | linear: after the warm-up, decay to lr_final x lr at train.max_steps
    lr_warmup_steps: int = 0  # the rate ramps linearly from lr / N to lr over the first N steps
    lr_final: float = 0.0  # cosine | linear: the rate at train.max_steps, as a fraction of lr (and of lr_dis)
    alpha: float = 0.9  # RMSprop smoothing
    beta1: float = 0.5  # Adam
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # 0: no clipping


@dataclass
class TrainConfig:
    batch_size: int = 64
    max_steps: int = 10000
    precision: str = "fp32"  # fp32 | bf16 | fp16 | auto (bf16 where it is native, else fp32; resolved at the start of a run)
    channels_last: bool = True
    seed: int = 0
    out_dir: str = "runs"
    run_name: str = ""  # default: derived from the config file's name
    log_every_steps: int = 50
    sample_every_steps: int = 1000
    checkpoint_every_steps: int = 1000
    keep_checkpoints: int = 3
    grad_accum_steps: int = 1
    sync_batchnorm: bool = False  # batch-norm statistics over all processes' batches (needs model.norm=batch)
    ema_decay: float = 0.0  # 0: no EMA copy; the decay ramps up as min(ema_decay, (1 + step) / (10 + step))
    max_nonfinite_steps: int = 5  # stop after this many consecutive non-finite losses
    eval_every_steps: int = 0  # 0: no periodic evaluation
    eval_num_images: int = 1000
    # At the end of training: a Gaussian mixture of this many components fitted to the posterior means
    # of the first prior_images training images, RUN/latent_prior.safetensors (vaegan sample's default
    # prior while it matches the weights; vaegan.storage.prior.fit_codes_mixture). 0: none.
    prior_components: int = 10
    prior_images: int = 10000
    threads: int | str = "auto"  # CPU intra-op threads: auto (usable CPUs, re-tuned under load) or a number
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])  # experiment trackers: see TRACKERS
    tensorboard: bool = True  # false: leave tensorboard out of train.trackers (the older switch, still honoured)
    progress: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


DIS_AUGMENT_KINDS = ("color", "translation", "cutout")  # loss.dis_augment's vocabulary (vaegan.training.augment)

LEVELS = {32: 2, 64: 3, 128: 4}  # data.resolution -> stride-2 stages down to the nets' 8x8 bottleneck

CHOICES = {
    "data.dataset": ("faces", "celeba", "folder"),
    "data.split": ("train", "val", "test", "all"),
    "data.resolution": (32, 64, 128),
    "model.kind": ("vaegan", "vae"),
    "model.norm": ("batch", "group", "none"),
    "model.dis_norm": ("", "batch", "group", "none"),
    "model.upsample": ("deconv", "resize"),
    "loss.recon": ("gaussian", "l1", "bernoulli"),
    "loss.adversarial": ("original", "nonsaturating", "hinge"),
    "loss.fake_sources": ("recon", "prior", "both"),
    "optim.name": ("rmsprop", "adam"),
    "optim.lr_schedule": ("constant", "cosine", "linear"),
    "train.precision": ("fp32", "bf16", "fp16", "auto"),
}


# train.trackers: Accelerate's tracker integrations (each needs its own package, e.g. pip install mlflow).
TRACKERS = ("tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio")


def _trackers(value: Any) -> list[str]:
    """``train.trackers``: a list of names or a comma list (``""`` or ``none``: no tracker)."""
    if isinstance(value, str):
        value = [] if value.strip().lower() in ("", "none") else value.split(",")
    if value is None:
        value = []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"config key 'train.trackers': expected a list of names, e.g. [tensorboard, mlflow], "
                          f"got {value!r}")
    names = list(dict.fromkeys(v.strip() for v in value if v.strip()))
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ConfigError(f"config key 'train.trackers': unknown tracker {unknown[0]!r}; choose from {list(TRACKERS)}")
    return names


def active_trackers(train: TrainConfig) -> list[str]:
    """The trackers a run logs to: ``train.trackers``, less tensorboard when ``train.tensorboard`` is false."""
    return [name for name in train.trackers if train.tensorboard or name != "tensorboard"]


AUTO_OR_COUNT = ("data.num_workers", "train.threads")  # "auto" or a whole number (>= 0 workers, >= 1 threads)


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check ``value`` against the field type, allowing int -> float."""
    if key == "train.trackers":
        return _trackers(value)
    if key in AUTO_OR_COUNT:
        low = 1 if key == "train.threads" else 0
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= low):
            return value
        raise ConfigError(f"config key '{key}': expected \"auto\" or a whole number >= {low}, got {value!r}")
    typ = {"int": int, "float": float, "str": str, "bool": bool}.get(typ, typ)
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if typ is float and isinstance(value, str):  # YAML 1.1 reads '1e-3' (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if typ is str and value is None:
        value = ""
    ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
    if not ok:
        raise ConfigError(
            f"config key '{key}': expected {typ.__name__}, got {value!r} ({type(value).__name__})"
        )
    choices = CHOICES.get(key)
    if choices is not None and value not in choices:
        raise ConfigError(f"config key '{key}': {value!r} is not valid; choose one of {list(choices)}")
    return value


def _section_fields(section: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(section))
    return {f.name: hints[f.name] for f in dataclasses.fields(section)}


def apply(cfg: Config, values: dict, origin: str = "config") -> Config:
    """Set ``{section: {key: value}}`` on ``cfg`` in place, validating every key."""
    if not isinstance(values, dict):
        raise ConfigError(f"{origin}: expected a mapping of sections, got {type(values).__name__}")
    sections = [f.name for f in dataclasses.fields(cfg)]
    for name, body in values.items():
        if name not in sections:
            raise ConfigError(f"{origin}: unknown section '{name}'; valid sections: {sections}")
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"{origin}: section '{name}' must be a mapping, got {body!r}")
        section = getattr(cfg, name)
        fields = _section_fields(section)
        for key, value in body.items():
            if key not in fields:
                raise ConfigError(
                    f"{origin}: unknown key '{name}.{key}'; valid keys in '{name}': {sorted(fields)}"
                )
            setattr(section, key, _coerce(f"{name}.{key}", value, fields[key]))
    return cfg


# Numeric bounds that a key's type cannot express. Every float key must also be finite (no .inf, .nan).
POSITIVE = (  # > 0
    "data.num_images", "model.latent_dim", "model.width", "model.enc_fc", "model.dis_fc",
    "loss.adaptive_weight_max", "loss.r1_every_steps", "loss.feature_layers", "optim.lr", "optim.eps",
    "train.batch_size", "train.max_steps", "train.grad_accum_steps", "train.log_every_steps",
    "train.max_nonfinite_steps", "train.eval_num_images", "train.prior_images",
)
NON_NEGATIVE = (  # >= 0; for the *_every_steps keys 0 means off, for keep_checkpoints it keeps all
    "data.crop", "data.seed", "model.dis_width",
    "loss.beta", "loss.gamma", "loss.pixel_weight", "loss.r1_gamma", "loss.adv_weight", "loss.prior_adv_weight", "loss.adv_start_step",
    "loss.warm_start_steps", "loss.kl_warmup_steps", "loss.equilibrium_target", "loss.equilibrium_margin",
    "loss.mmd_weight", "loss.agg_kl_weight",
    "optim.lr_dis", "optim.lr_warmup_steps", "optim.weight_decay", "optim.grad_clip",
    "train.seed", "train.sample_every_steps", "train.checkpoint_every_steps", "train.keep_checkpoints",
    "train.eval_every_steps", "train.prior_components",
)
AT_LEAST_MINUS_ONE = ("data.crop_top", "data.crop_left")  # -1: centred
UNIT_INTERVAL = ("optim.alpha", "optim.beta1", "optim.beta2", "train.ema_decay")  # [0, 1)
CLOSED_UNIT_INTERVAL = ("optim.lr_final",)  # [0, 1]


def _value(cfg: Config, key: str):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def validate(cfg: Config) -> None:
    """Checks that a single key's type cannot express: finite floats, numeric bounds, cross-field rules."""
    for section in dataclasses.fields(cfg):
        for name, typ in _section_fields(getattr(cfg, section.name)).items():
            value = getattr(getattr(cfg, section.name), name)
            if typ is float and isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"config key '{section.name}.{name}': must be a finite number, got {value!r}")
    for keys, ok, rule in ((POSITIVE, lambda v: v > 0, "> 0"), (NON_NEGATIVE, lambda v: v >= 0, ">= 0"),
                           (AT_LEAST_MINUS_ONE, lambda v: v >= -1, ">= -1"),
                           (UNIT_INTERVAL, lambda v: 0 <= v < 1, "in [0, 1)"),
                           (CLOSED_UNIT_INTERVAL, lambda v: 0 <= v <= 1, "in [0, 1]")):
        for key in keys:
            value = _value(cfg, key)
            if not ok(value):
                raise ConfigError(f"config key '{key}': must be {rule}, got {value!r}")
    if cfg.model.logvar_min >= cfg.model.logvar_max:
        raise ConfigError("config keys 'model.logvar_min' < 'model.logvar_max' required")
    bad_aug = {k.strip() for k in cfg.loss.dis_augment.split(",") if k.strip()} - set(DIS_AUGMENT_KINDS)
    if bad_aug:
        raise ConfigError(f"config key 'loss.dis_augment': unknown {sorted(bad_aug)}; "
                          f"give a comma list of {', '.join(DIS_AUGMENT_KINDS)}")
    if cfg.loss.prior_adv_weight != 1.0 and cfg.loss.fake_sources != "both":
        raise ConfigError(f"config key 'loss.prior_adv_weight': weighs prior samples against reconstructions in the "
                          f"decoder's adversarial term, so it needs loss.fake_sources=both, got "
                          f"{cfg.loss.fake_sources!r} (with prior alone, loss.adv_weight scales it)")
    stages = LEVELS.get(cfg.data.resolution, 0)  # the discriminator's stride-2 convs
    if cfg.loss.feature_layers > stages > 0:
        raise ConfigError(f"config key 'loss.feature_layers': at most {stages} at "
                          f"data.resolution={cfg.data.resolution} (the discriminator's stride-2 convs), "
                          f"got {cfg.loss.feature_layers}")
    if cfg.train.sync_batchnorm and cfg.model.norm != "batch":
        raise ConfigError(f"config key 'train.sync_batchnorm': needs model.norm='batch', got {cfg.model.norm!r}")
    if cfg.data.dataset in ("celeba", "folder") and not cfg.data.root:
        raise ConfigError(f"config key 'data.root': required for data.dataset={cfg.data.dataset!r}")


def parse_override(text: str) -> dict:
    """``'loss.gamma=1e-3'`` -> ``{'loss': {'gamma': 0.001}}`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    path, raw = text.split("=", 1)
    parts = path.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {text!r}: expected section.key=value, e.g. train.max_steps=100")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: cannot parse value: {e}") from None
    return {parts[0]: {parts[1]: value}}


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: invalid YAML: {e}") from None
    return values or {}


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the YAML file, then each ``section.key=value`` override in order."""
    cfg = Config()
    if path is not None:
        values = load_yaml(path)
        if not values:  # an empty file (or only comments) would silently train every default
            raise ConfigError(f"config file {path} holds no settings (it is empty or only comments); put the "
                              f"sections to change in it (see configs/), e.g. 'train: {{max_steps: 1000}}'")
        apply(cfg, values, origin=str(path))
        if not cfg.train.run_name:
            cfg.train.run_name = Path(path).stem
    for text in overrides:
        apply(cfg, parse_override(text), origin=f"override '{text}'")
    validate(cfg)
    return cfg


def from_dict(values: dict) -> Config:
    """Rebuild a config saved with :meth:`Config.to_dict` (e.g. from a checkpoint)."""
    cfg = apply(Config(), values, origin="saved config")
    validate(cfg)
    return cfg
