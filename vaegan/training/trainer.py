"""The training loop: set-up, Accelerate, mixed precision, EMA, logging, checkpoints, resume.

``Trainer(cfg, run_dir).fit()`` trains a plain VAE or a Larsen VAE-GAN. What one iteration
computes and which network learns from what is :class:`vaegan.training.update.Update`; the
trainer builds it, feeds it batches and noise, and keeps the state around it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shlex
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from vaegan import data as _data
from vaegan.config import Config, ConfigError, active_trackers
from vaegan.data.loader import GlobalBatchSampler, batches
from vaegan.files import write_text_atomic
from vaegan.images import save_grid, to_float
from vaegan.models import VAE, build_decoder, build_discriminator, build_encoder
from vaegan.models.gmm import GaussianMixture
from vaegan.models.layers import fill_prior_statistics, sync_batchnorm
from vaegan.errors import InputError, VaeganError
from vaegan.storage.checkpoint import has_checkpoint, load_checkpoint, resolve_checkpoint, save_checkpoint
from vaegan.storage.prior import fit_codes_mixture, prior_path, save_prior
from vaegan.threads import (SlowdownDetector, ThreadTuner, apply_threads, fixed_threads, loader_workers,
                            precision_note, resolve_precision)
from vaegan.training.ema import EMA, recalibrate_batchnorm
from vaegan.training.schedule import lr_factor
from vaegan.training.update import LossScale, Update


class TrainingDiverged(VaeganError, RuntimeError):
    """Too many consecutive non-finite losses; the message names the last good checkpoint (or says there is
    none) and the command that continues the run with a lower learning rate."""


class SharedNoise:
    """Standard normal noise that every rank draws in step: each call draws the global batch's
    noise from one generator and returns this rank's slice, so N processes see the noise one
    process would."""

    def __init__(self, seed: int, device: torch.device, rank: int = 0, world: int = 1):
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.device, self.rank, self.world = device, rank, world

    def __call__(self, shape: tuple[int, ...]) -> torch.Tensor:
        full = torch.randn((shape[0] * self.world, *shape[1:]), generator=self.generator, device=self.device)
        return full[self.rank * shape[0] : (self.rank + 1) * shape[0]]

    def get_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


def build_networks(cfg: Config, device: torch.device, memory_format: torch.memory_format) -> dict[str, torch.nn.Module]:
    """{"encoder", "decoder"[, "discriminator"]} for ``cfg``, on ``device`` in ``memory_format``."""
    res = cfg.data.resolution
    nets = {"encoder": build_encoder(cfg.model, res), "decoder": build_decoder(cfg.model, res)}
    if cfg.model.kind == "vaegan":
        nets["discriminator"] = build_discriminator(cfg.model, res)
    if cfg.train.sync_batchnorm:
        nets = {k: sync_batchnorm(v) for k, v in nets.items()}
    return {k: v.to(device, memory_format=memory_format) for k, v in nets.items()}


def learning_rate(cfg: Config, network: str) -> float:
    """optim.lr, or optim.lr_dis for the discriminator when it is set."""
    return (cfg.optim.lr_dis or cfg.optim.lr) if network == "discriminator" else cfg.optim.lr


def build_optimizer(params, cfg, lr: float) -> torch.optim.Optimizer:
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=cfg.alpha, eps=cfg.eps,
                                   weight_decay=cfg.weight_decay, foreach=True)
    return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                            weight_decay=cfg.weight_decay, foreach=True)


class Trainer:
    def __init__(self, cfg: Config, run_dir: str | Path, resume: bool = False):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        t = cfg.train
        if t.precision == "fp16" and not torch.cuda.is_available():
            raise ConfigError("train.precision=fp16 needs a CUDA GPU (fp16 autocast does nothing on CPU); use bf16")
        torch.manual_seed(t.seed)
        random.seed(t.seed)
        # Autocast and loss scaling are ours, not Accelerate's: its scaler updates after every
        # optimizer's step, which is wrong with three optimizers, and its precision is a
        # process-wide singleton that would pin every later Trainer in the process.
        self.accelerator = Accelerator(
            gradient_accumulation_steps=t.grad_accum_steps,
            log_with=build_trackers(active_trackers(t), self.run_dir) or None,
            project_dir=str(self.run_dir),
        )
        acc = self.accelerator
        self.device = acc.device
        if t.precision == "auto":  # resolved once, and recorded so: a resume keeps what the run trained in
            resolved = resolve_precision(t.precision, self.device.type)
            acc.print(f"precision: {resolved} (train.precision=auto on {self.device.type})")
            self.cfg = cfg = dataclasses.replace(cfg, train=dataclasses.replace(t, precision=resolved))
            t = cfg.train
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision)
        self.autocast = lambda: torch.autocast(self.device.type, dtype=amp_dtype, enabled=amp_dtype is not None)
        self.scaler = torch.amp.GradScaler(self.device.type) if t.precision == "fp16" else None
        micro = acc.num_processes * t.grad_accum_steps
        if t.batch_size % micro:
            raise ConfigError(f"train.batch_size={t.batch_size} must be divisible by processes x "
                             f"grad_accum_steps = {micro}")
        self.local_batch = t.batch_size // micro
        if cfg.loss.mmd_weight > 0 and self.local_batch < 2:
            raise ConfigError(f"config key 'loss.mmd_weight': the MMD compares a micro-batch's codes as a set and "
                              f"needs at least 2 per process, got train.batch_size={t.batch_size} over processes x "
                              f"grad_accum_steps = {micro}")
        if cfg.loss.agg_kl_weight > 0 and self.local_batch < 2:
            raise ConfigError(f"config key 'loss.agg_kl_weight': the aggregate KL folds in a micro-batch's code "
                              f"covariance and needs at least 2 codes per process, got train.batch_size={t.batch_size} "
                              f"over processes x grad_accum_steps = {micro}")

        # Data: a deterministic global order, this rank's slice of every batch.
        self.dataset = _data.build_dataset(cfg.data)

        self._setup_threads()

        # Networks (data-parallel wrapped), optimizers (stepped by the update itself: Accelerate's
        # wrapper would skip steps while accumulating), EMA.
        self.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        nets = build_networks(cfg, self.device, self.memory_format)
        self.opts = {k: build_optimizer(v.parameters(), cfg.optim, learning_rate(cfg, k)) for k, v in nets.items()}
        self.nets = dict(zip(nets, acc.prepare(*nets.values())))
        self.ema = EMA({k: acc.unwrap_model(self.nets[k]) for k in ("encoder", "decoder")}, t.ema_decay) \
            if t.ema_decay > 0 else None

        # Noise shared by all ranks: each draws the global batch's noise and takes its slice.
        self.noise = SharedNoise(t.seed + 1, self.device, acc.process_index, acc.num_processes)
        self.update = Update(cfg, self.nets, self.opts, LossScale(t.grad_accum_steps, self.scaler), self.autocast,
                             last_layer=acc.unwrap_model(self.nets["decoder"]).last_layer,
                             reduce_sum=lambda v: acc.reduce(v.to(self.device), "sum"))
        self.step = 0
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self.resumed_changes: dict[str, tuple] = {}  # key -> (checkpoint's value, this run's), see _resume
        self._saved_step = -1
        if resume:
            self._resume()
        self.sampler = GlobalBatchSampler(len(self.dataset), t.batch_size // t.grad_accum_steps,
                                          acc.process_index, acc.num_processes, t.seed,
                                          start_batch=self.step * t.grad_accum_steps)
        self.fixed_z = torch.randn(64, cfg.model.latent_dim, generator=torch.Generator().manual_seed(1234))
        self.fixed_x = torch.stack([self.dataset[i] for i in range(min(32, len(self.dataset)))])
        # Training images the EMA copy's batch-norm statistics are recomputed from (see inference_model).
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(t.seed))
        self.calibration_x = torch.stack([self.dataset[int(i)] for i in order[:256]]) if self.ema is not None else None
        self._ema_calibrated_at = -1
        self._eval_reference: torch.Tensor | None = None

    def _setup_threads(self) -> None:
        """CPU threads and loader workers (vaegan.threads), logged; re-tuned under load when auto."""
        acc, t = self.accelerator, self.cfg.train
        self.workers = loader_workers(self.cfg.data.num_workers, hasattr(self.dataset, "get_batch"), self.device.type)
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", acc.num_processes))
        acc.print(apply_threads(t.threads, self.workers, self.device.type, local_processes))
        note = precision_note(t.precision, self.device.type)
        if note:
            acc.print(f"warning: {note}")
        tune = self.device.type == "cpu" and fixed_threads(t.threads) is None and torch.get_num_threads() > 1
        self.thread_tuner = ThreadTuner(torch.get_num_threads()) if tune else None
        self.slowdown = SlowdownDetector()

    # ------------------------------------------------------------------ iteration

    def prepare_batch(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, R, R) from the loader -> float in [-1, 1] on the device, flipped per
        ``data.hflip`` with the shared noise, in the training memory format."""
        x = to_float(images.to(self.device, non_blocking=True))
        if self.cfg.data.hflip:
            flip = self.noise((x.shape[0],)) > 0
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x.contiguous(memory_format=self.memory_format)

    def train_step(self, images: torch.Tensor) -> dict[str, float] | None:
        """One micro-batch; returns the step's logs (averaged over ranks) when the step completed."""
        acc = self.accelerator
        x = self.prepare_batch(images)
        factor = lr_factor(self.cfg.optim, self.step, self.cfg.train.max_steps)
        for name, opt in self.opts.items():
            for group in opt.param_groups:
                group["lr"] = learning_rate(self.cfg, name) * factor
        with acc.accumulate(*self.nets.values()):
            result = self.update(x, self.noise, self.step, sync=acc.sync_gradients)
        if not acc.sync_gradients:
            return None
        if result.stepped and self.ema is not None:
            self.ema.update({k: acc.unwrap_model(self.nets[k]) for k in ("encoder", "decoder")}, self.step)
        self.step += 1
        logs = result.logs
        values = torch.stack([v.detach().float().reshape(()).to(self.device) for v in logs.values()])
        out = dict(zip(logs.keys(), acc.reduce(values, "mean").tolist()))
        out["train/skipped_nonfinite"] = float(not result.finite)
        out["train/lr"] = self.cfg.optim.lr * factor
        return out

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        acc = self.accelerator
        state = {
            "config": self.cfg.to_dict(),
            "step": self.step,
            "nonfinite_total": self.nonfinite_total,
            "models": {k: acc.unwrap_model(v).state_dict() for k, v in self.nets.items()},
            "optimizers": {k: v.state_dict() for k, v in self.opts.items()},
            "rng": {"noise": self.noise.get_state(), "torch": torch.get_rng_state(),
                    "python": random.getstate()},
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.update.moments is not None:
            state["agg_kl_moments"] = self.update.moments.state_dict()
        if torch.cuda.is_available():
            state["rng"]["cuda"] = torch.cuda.get_rng_state()
        return state

    def _load(self, state: dict) -> None:
        acc = self.accelerator
        for k, net in self.nets.items():
            module = acc.unwrap_model(net)
            module.load_state_dict(fill_prior_statistics(module, state["models"][k]))
            self.opts[k].load_state_dict(state["optimizers"][k])
            _check_optimizer_state(k, self.opts[k])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        if self.update.moments is not None and "agg_kl_moments" in state:  # else (turned on at resume) from scratch
            self.update.moments.load_state_dict(state["agg_kl_moments"])
        self.noise.set_state(state["rng"]["noise"])
        torch.set_rng_state(state["rng"]["torch"])
        py = state["rng"]["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["rng"]["cuda"])
        self.step = int(state["step"])
        self.nonfinite_total = int(state.get("nonfinite_total", 0))

    def _resume(self) -> None:
        """Load the newest intact checkpoint (see vaegan.storage.checkpoint.resolve_checkpoint); without any
        checkpoint (the run stopped before its first) training restarts from step 0. Keys this config changes
        against the checkpoint's (or the stopped attempt's config.json; the overrides a resume allows) are kept
        in ``resumed_changes``, printed and noted in log.jsonl; the learning rates are this config's, not the
        saved optimizers' (train_step sets them before every update)."""
        if has_checkpoint(self.run_dir):
            folder, state = load_checkpoint(self.run_dir)
            try:
                self._load(state)
            except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
                raise InputError(f"{folder / 'state.json'}: cannot resume from this checkpoint, it does not hold "
                                 f"what this run's config needs ({type(e).__name__}: {e})") from None
            self._saved_step, saved, start = self.step, state["config"], f"from {folder} (step {self.step})"
        else:  # compared with the config the stopped attempt was started with
            try:
                saved = json.loads((self.run_dir / "config.json").read_text())
            except (OSError, ValueError, RecursionError):
                saved = {}
            start = "from step 0: it holds no checkpoint (the run stopped before its first one)"
        saved = {f"{s}.{k}": v for s, body in saved.items() if isinstance(body, dict) for k, v in body.items()} \
            if isinstance(saved, dict) else {}
        now = {f"{s}.{k}": v for s, body in self.cfg.to_dict().items() for k, v in body.items()}
        self.resumed_changes = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k, v) != v}
        self.accelerator.print(f"resuming {self.run_dir} {start}" + (
            "; changed: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in self.resumed_changes.items())
            if self.resumed_changes else ""))

    def _advice(self, override: str = "") -> str:
        """What to run to continue this run after it stopped: from its newest intact checkpoint, or from step 0."""
        command = f"vaegan train --resume {shlex.quote(str(self.run_dir))}" + (f" {override}" if override else "")
        try:
            folder = resolve_checkpoint(self.run_dir) if has_checkpoint(self.run_dir) else None
        except VaeganError:
            folder = None
        if folder is None:
            return f"no checkpoint was written before it stopped; restart the run from step 0 with: {command}"
        return f"the last good checkpoint is {folder}; resume from it with: {command}"

    def save(self) -> None:
        self._saved_step = self.step
        if self.accelerator.is_main_process:
            self.inference_model()  # the EMA's batch-norm statistics, recomputed for the saved weights
            save_checkpoint(self.run_dir, self.step, self.state_dict(), keep=self.cfg.train.keep_checkpoints)
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ outputs

    def inference_model(self) -> VAE:
        """The EMA encoder/decoder when there is an EMA, else the live ones (unwrapped)."""
        acc = self.accelerator
        if self.ema is None:
            return VAE(acc.unwrap_model(self.nets["encoder"]), acc.unwrap_model(self.nets["decoder"]),
                       self.cfg.model.latent_dim)
        mods = self.ema.modules
        if self._ema_calibrated_at != self.step:
            x = to_float(self.calibration_x.to(self.device)).contiguous(memory_format=self.memory_format)
            recalibrate_batchnorm(mods["encoder"], mods["decoder"], x, self.cfg.model.latent_dim)
            self._ema_calibrated_at = self.step
        return VAE(mods["encoder"], mods["decoder"], self.cfg.model.latent_dim)

    def fit_prior(self) -> GaussianMixture | None:
        """Fit the ex-post latent prior (``train.prior_components``, ``train.prior_images``) to the
        final model's codes of its training images and write it to RUN/latent_prior.safetensors,
        recorded as fitted for this step and these weights (EMA or raw): ``vaegan sample``'s default
        prior while they match. Main process only; None when off or with too few images."""
        t = self.cfg.train
        if t.prior_components == 0:
            return None
        n = min(t.prior_images, len(self.dataset))
        if n < t.prior_components:
            self.accelerator.print(f"no latent prior fitted: {n} training images for train.prior_components="
                                   f"{t.prior_components}; sampling stays with N(0, I)")
            return None
        try:
            mixture, n = fit_codes_mixture(self.inference_model(), self.dataset, t.prior_components, n, seed=t.seed)
        except (RuntimeError, ValueError) as e:  # e.g. non-finite codes of a diverged model: the run itself is saved
            self.accelerator.print(f"no latent prior fitted ({type(e).__name__}: {e}); sampling stays with N(0, I); "
                                   f"try again with: vaegan fit-prior --checkpoint {self.run_dir}")
            return None
        info = {"source": str(self.run_dir), "step": self.step, "weights": "raw" if self.ema is None else "ema"}
        path = save_prior(mixture, prior_path(self.run_dir), info, n, t.prior_components)
        self.accelerator.print(f"latent prior: {t.prior_components} components fitted to the codes of {n} training "
                               f"images, {path} (vaegan sample's default; --prior normal for N(0, I))")
        return mixture

    @torch.no_grad()
    def write_grids(self, tag: str, mixture: GaussianMixture | None = None) -> dict[str, Path]:
        """Prior samples from fixed latents and fixed inputs beside their reconstructions; given a
        fitted ``mixture``, also samples from it (fixed seed, the decoder's data statistics)."""
        model = self.inference_model()
        was_training = model.training
        model.eval()
        samples = model.decode(self.fixed_z.to(self.device), from_prior=True).float()
        x = to_float(self.fixed_x.to(self.device)).contiguous(memory_format=self.memory_format)
        rec = model.reconstruct(x).float()
        pairs = torch.stack([x, rec], dim=1).flatten(0, 1)
        if mixture is not None:
            z = mixture.sample(len(self.fixed_z), torch.Generator().manual_seed(1234)).float()
            mixed = model.decode(z.to(self.device)).float()
        model.train(was_training)
        paths = {"samples": self.run_dir / "samples" / f"{tag}-prior.png",
                 "recon": self.run_dir / "samples" / f"{tag}-recon.png"}
        save_grid(samples, paths["samples"], nrow=8)
        save_grid(pairs, paths["recon"], nrow=8)
        if mixture is not None:
            paths["mixture"] = self.run_dir / "samples" / f"{tag}-mixture.png"
            save_grid(mixed, paths["mixture"], nrow=8)
        tracker = self._tensorboard()
        if tracker is not None:
            from vaegan.images import make_grid
            tracker.add_image("samples/prior", make_grid(samples), self.step)
            tracker.add_image("samples/recon", make_grid(pairs), self.step)
        return paths

    def evaluate(self) -> dict[str, float]:
        """Download-free metrics (SWD, sharpness, reconstruction PSNR/SSIM) on the validation split.

        Runs on the main process (the models are identical on every rank); the others wait.
        """
        from vaegan.metrics.quick import load_images, quick_metrics

        metrics: dict[str, float] = {}
        if self.accelerator.is_main_process:
            n = self.cfg.train.eval_num_images
            if self._eval_reference is None:  # a fixed subset of the validation split, read once
                self._eval_reference = load_images(_data.build_dataset(self.cfg.data, "val"), n,
                                                   self.cfg.data.resolution)
            metrics = {f"eval/{k}": v for k, v in quick_metrics(self.inference_model(), self._eval_reference, n,
                                                                 seed=self.cfg.train.seed).items()}
        self.accelerator.wait_for_everyone()
        return metrics

    def _tensorboard(self):
        if "tensorboard" not in active_trackers(self.cfg.train) or not self.accelerator.is_main_process:
            return None
        return self.accelerator.get_tracker("tensorboard", unwrap=True)

    # ------------------------------------------------------------------ loop

    def fit(self) -> dict:
        """Train to ``train.max_steps`` (from the resumed step), checkpointing on the way and at
        the end. Returns {"step", "last" (the last step's logs), "grids", "nonfinite_total"}."""
        acc, t = self.accelerator, self.cfg.train
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.run_dir / "config.json", self.cfg.to_json() + "\n")
            note = _truncate_log(self.run_dir / "log.jsonl", self.step)
            if note:
                self.accelerator.print(note)
            record = {f"resumed_with/{k}": float(b) for k, (a, b) in self.resumed_changes.items()
                      if isinstance(b, (int, float))}  # a record in the log of what this resume changed (numbers only)
            if record:
                with open(self.run_dir / "log.jsonl", "a") as f:
                    f.write(json.dumps({"step": self.step, **record}) + "\n")
        for net in self.nets.values():
            net.train()
        stream = batches(self.dataset, self.sampler, self.workers)
        tick, images_seen, last = time.perf_counter(), 0, {}
        with RunLog(self) as log:
            while self.step < t.max_steps:
                try:
                    images = next(stream)
                except InputError as e:  # an unreadable image mid-epoch: say how to go on
                    text = str(e)
                    if "\nOriginal Traceback" in text:  # from a loader worker: the message ends its traceback
                        text = text.rstrip().splitlines()[-1].split(": ", 1)[-1]
                    fix = "" if self.cfg.data.skip_bad_images else "data.skip_bad_images=true"
                    raise InputError(f"{text}. Training stopped at step {self.step}: {self._advice(fix)}") from None
                logs = self.train_step(images)
                images_seen += self.local_batch * acc.num_processes
                if logs is None:
                    continue
                self._count_nonfinite(logs)
                now = time.perf_counter()
                logs["perf/img_per_s"] = images_seen / max(now - tick, 1e-9)
                self._watch_speed(now - tick, log)
                tick, images_seen, last = now, 0, logs
                log.step(self.step, logs, flush=self.step % t.log_every_steps == 0 or self.step == t.max_steps)
                self._periodic(log)
        if self._saved_step != self.step:
            self.save()
        grids = self.write_grids("final", self.fit_prior()) if acc.is_main_process else {}
        if active_trackers(t):
            acc.end_training()
        return {"step": self.step, "last": last, "grids": {k: str(v) for k, v in grids.items()},
                "nonfinite_total": self.nonfinite_total}

    def _watch_speed(self, seconds: float, log: "RunLog") -> None:
        """Feed one step's time to the thread tuner and the slowdown detector; say what they decide.
        Both start over when a VAE-GAN's warm start ends: its steps cost more from then on."""
        for note in (self.thread_tuner.observe(seconds, self.step) if self.thread_tuner else None,
                     self.slowdown.observe(seconds)):
            if note:
                log.note(self.step, note)
        if "discriminator" in self.nets and self.step == self.cfg.loss.warm_start_steps > 0:  # a dearer step next
            self.slowdown = SlowdownDetector()
            if self.thread_tuner:
                self.thread_tuner.remeasure()

    def _periodic(self, log: "RunLog") -> None:
        """Sample grids, evaluation and checkpoints when their step counts come round."""
        t, step = self.cfg.train, self.step
        if t.sample_every_steps and step % t.sample_every_steps == 0 and self.accelerator.is_main_process:
            self.write_grids(f"step-{step:08d}")
        if t.eval_every_steps and step % t.eval_every_steps == 0:
            log.metrics(step, self.evaluate())
        if t.checkpoint_every_steps and step % t.checkpoint_every_steps == 0 and not self.nonfinite_in_a_row:
            log.flush()  # the log is complete up to every checkpoint; never checkpoint inside a non-finite streak
            self.save()

    def _count_nonfinite(self, logs: dict[str, float]) -> None:
        if logs["train/skipped_nonfinite"]:
            self.nonfinite_in_a_row += 1
            self.nonfinite_total += 1
            bad = sorted(k for k, v in logs.items() if not math.isfinite(v))
            self.accelerator.print(f"step {self.step}: non-finite loss ({', '.join(bad)}); step skipped")
            if self.nonfinite_in_a_row >= self.cfg.train.max_nonfinite_steps:
                optim = self.cfg.optim
                lower = f"optim.lr={optim.lr / 10:g}" + (f" optim.lr_dis={optim.lr_dis / 10:g}" if optim.lr_dis else "")
                raise TrainingDiverged(
                    f"{self.nonfinite_in_a_row} consecutive steps with non-finite losses (last: {', '.join(bad)}) "
                    f"at step {self.step}; stopped. {self._advice(lower)} (a lower learning rate; optim.grad_clip=1 "
                    f"or train.precision=fp32 may help too)"
                )
        else:
            self.nonfinite_in_a_row = 0


# What each tracker of train.trackers needs installed (the PyPI name).
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml",
                    "aim": "'aim<4'", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab",
                    "trackio": "trackio"}
TRACKER_PROJECT = "vaegan"  # the project (wandb, comet_ml) or experiment (mlflow) runs are logged under


def build_trackers(names: list[str], run_dir: Path) -> list:
    """Accelerate's ``log_with`` for ``names``; ConfigError naming the package of a tracker that is not
    installed. TensorBoard writes to ``RUN/tb``; the others are set up by Accelerate (wandb in ``RUN/wandb``)."""
    from accelerate.tracking import TensorBoardTracker, get_available_trackers

    available = {getattr(t, "value", str(t)) for t in get_available_trackers()}
    for name in names:
        if name not in available:
            raise ConfigError(f"train.trackers: {name!r} needs its package, which is not installed here: "
                              f"pip install {TRACKER_PACKAGES.get(name, name)} (or leave {name} out of train.trackers)")
    return [TensorBoardTracker("tb", run_dir) if name == "tensorboard" else name for name in names]


def tracker_config(cfg: Config) -> dict:
    """The resolved config as flat hyperparameters, ``{"section.key": bool | int | float | str}``."""
    flat = {}
    for section, values in cfg.to_dict().items():
        for key, value in values.items():
            flat[f"{section}.{key}"] = ",".join(map(str, value)) if isinstance(value, list) else value
    return flat


def _check_optimizer_state(name: str, opt: torch.optim.Optimizer) -> None:
    """load_state_dict checks the parameter counts only: a moment of another shape would fail at
    the first step (or broadcast silently)."""
    for i, p in enumerate(q for group in opt.param_groups for q in group["params"]):
        for key, value in opt.state.get(p, {}).items():
            if torch.is_tensor(value) and value.dim() > 0 and value.shape != p.shape:
                raise ValueError(f"optimizers.{name}: state {key!r} of parameter {i} has shape {tuple(value.shape)}, "
                                 f"the parameter {tuple(p.shape)}")


class RunLog:
    """Where a run's numbers go: log.jsonl (every step), the trackers of ``train.trackers`` (TensorBoard
    by default; the resolved config as hyperparameters) and the progress bar (every
    ``train.log_every_steps``). Only the main process writes; the others hold no files."""

    def __init__(self, trainer: Trainer):
        acc, t = trainer.accelerator, trainer.cfg.train
        self.accelerator, self.trackers = acc, active_trackers(t)
        main = acc.is_main_process
        if self.trackers:
            name = t.run_name or trainer.run_dir.name
            acc.init_trackers(TRACKER_PROJECT, config=tracker_config(trainer.cfg),
                              init_kwargs={"wandb": {"name": name, "dir": str(trainer.run_dir)},
                                           "mlflow": {"run_name": name}})
        self.file = open(trainer.run_dir / "log.jsonl", "a") if main else None
        self.progress = None
        if main and t.progress:
            from tqdm.auto import tqdm
            self.progress = tqdm(total=t.max_steps, initial=trainer.step, desc=trainer.run_dir.name,
                                 dynamic_ncols=True)

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.close()
        if self.file is not None:
            self.file.close()

    def step(self, step: int, logs: dict[str, float], flush: bool) -> None:
        if self.file is not None:
            self.file.write(json.dumps({"step": step, **logs}) + "\n")
        if flush:
            self.flush()
            if self.trackers:
                self.accelerator.log(logs, step=step)
            if self.progress is not None:
                self.progress.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in logs.items() if k.startswith("loss/")})
        if self.progress is not None:
            self.progress.update(1)

    def note(self, step: int, text: str) -> None:
        """A message for the user, printed above the progress bar (log.jsonl stays numbers only)."""
        if self.progress is not None:
            self.progress.write(f"step {step}: {text}")
        else:
            self.accelerator.print(f"step {step}: {text}")

    def metrics(self, step: int, metrics: dict[str, float]) -> None:
        if self.file is not None:
            self.file.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.trackers:
            self.accelerator.log(metrics, step=step)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()


def _truncate_log(path: Path, step: int) -> str | None:
    """On resume, drop log lines from steps after the checkpoint (they will be redone) and lines that
    are not JSON records with a step (an unfinished last line of a killed run); a note saying what
    was dropped, or None."""
    if not path.exists():
        return None
    kept, after, unreadable = [], 0, 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            line_step = record["step"]
            ok = isinstance(line_step, int) and not isinstance(line_step, bool)
        except (ValueError, TypeError, KeyError, RecursionError):
            ok = False
        if not ok:
            unreadable += 1
        elif line_step > step:
            after += 1
        else:
            kept.append(line)
    write_text_atomic(path, "".join(line + "\n" for line in kept))
    dropped = [f"{after} line(s) of steps after {step} (they are redone)"] * bool(after) + \
        [f"{unreadable} unreadable line(s) (e.g. the unfinished last line of a killed run)"] * bool(unreadable)
    return f"{path}: dropped {' and '.join(dropped)}" if dropped else None
