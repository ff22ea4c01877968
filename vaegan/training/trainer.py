"""The training loop: set-up, Accelerate, mixed precision, EMA, logging, checkpoints, resume.

``Trainer(cfg, run_dir).fit()`` trains a plain VAE or a Larsen VAE-GAN. What one iteration
computes and which network learns from what is :class:`vaegan.training.update.Update`; the
trainer builds it, feeds it batches and noise, and keeps the state around it.
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from vaegan import data as _data
from vaegan.config import Config, ConfigError
from vaegan.data.loader import GlobalBatchSampler, batches
from vaegan.files import write_text_atomic
from vaegan.images import save_grid, to_float
from vaegan.models import VAE, build_decoder, build_discriminator, build_encoder
from vaegan.models.layers import sync_batchnorm
from vaegan.errors import VaeganError
from vaegan.storage.checkpoint import load_checkpoint, save_checkpoint
from vaegan.training.ema import EMA, recalibrate_batchnorm
from vaegan.training.update import LossScale, Update


class TrainingDiverged(VaeganError, RuntimeError):
    """Too many consecutive non-finite losses; the last good checkpoint is intact."""


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
            log_with="tensorboard" if t.tensorboard else None,
            project_dir=str(self.run_dir),
        )
        acc = self.accelerator
        self.device = acc.device
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision)
        self.autocast = lambda: torch.autocast(self.device.type, dtype=amp_dtype, enabled=amp_dtype is not None)
        self.scaler = torch.amp.GradScaler(self.device.type) if t.precision == "fp16" else None
        micro = acc.num_processes * t.grad_accum_steps
        if t.batch_size % micro:
            raise ConfigError(f"train.batch_size={t.batch_size} must be divisible by processes x "
                             f"grad_accum_steps = {micro}")
        self.local_batch = t.batch_size // micro

        # Data: a deterministic global order, this rank's slice of every batch.
        self.dataset = _data.build_dataset(cfg.data)

        # Networks (data-parallel wrapped), optimizers (stepped by the update itself: Accelerate's
        # wrapper would skip steps while accumulating), EMA.
        self.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        nets = build_networks(cfg, self.device, self.memory_format)
        self.opts = {k: build_optimizer(v.parameters(), cfg.optim, cfg.optim.lr_dis or cfg.optim.lr
                                        if k == "discriminator" else cfg.optim.lr) for k, v in nets.items()}
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
        if resume:
            self._load(load_checkpoint(self.run_dir)[1])
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
        if torch.cuda.is_available():
            state["rng"]["cuda"] = torch.cuda.get_rng_state()
        return state

    def _load(self, state: dict) -> None:
        acc = self.accelerator
        for k, net in self.nets.items():
            acc.unwrap_model(net).load_state_dict(state["models"][k])
            self.opts[k].load_state_dict(state["optimizers"][k])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.noise.set_state(state["rng"]["noise"])
        torch.set_rng_state(state["rng"]["torch"])
        py = state["rng"]["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["rng"]["cuda"])
        self.step = int(state["step"])
        self.nonfinite_total = int(state.get("nonfinite_total", 0))

    def save(self) -> None:
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

    @torch.no_grad()
    def write_grids(self, tag: str) -> dict[str, Path]:
        """Prior samples from fixed latents and fixed inputs beside their reconstructions."""
        model = self.inference_model()
        was_training = model.training
        model.eval()
        samples = model.decode(self.fixed_z.to(self.device)).float()
        x = to_float(self.fixed_x.to(self.device)).contiguous(memory_format=self.memory_format)
        rec = model.reconstruct(x).float()
        pairs = torch.stack([x, rec], dim=1).flatten(0, 1)
        model.train(was_training)
        paths = {"samples": self.run_dir / "samples" / f"{tag}-prior.png",
                 "recon": self.run_dir / "samples" / f"{tag}-recon.png"}
        save_grid(samples, paths["samples"], nrow=8)
        save_grid(pairs, paths["recon"], nrow=8)
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
        if not self.cfg.train.tensorboard or not self.accelerator.is_main_process:
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
            _truncate_log(self.run_dir / "log.jsonl", self.step)
        for net in self.nets.values():
            net.train()
        stream = batches(self.dataset, self.sampler, self.cfg.data.num_workers)
        tick, images_seen, last = time.perf_counter(), 0, {}
        with RunLog(self) as log:
            while self.step < t.max_steps:
                logs = self.train_step(next(stream))
                images_seen += self.local_batch * acc.num_processes
                if logs is None:
                    continue
                self._count_nonfinite(logs)
                now = time.perf_counter()
                logs["perf/img_per_s"] = images_seen / max(now - tick, 1e-9)
                tick, images_seen, last = now, 0, logs
                log.step(self.step, logs, flush=self.step % t.log_every_steps == 0 or self.step == t.max_steps)
                self._periodic(log)
        if not (self.run_dir / "checkpoints" / f"step-{self.step:08d}").exists():
            self.save()
        grids = self.write_grids("final") if acc.is_main_process else {}
        if t.tensorboard:
            acc.end_training()
        return {"step": self.step, "last": last, "grids": {k: str(v) for k, v in grids.items()},
                "nonfinite_total": self.nonfinite_total}

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
                raise TrainingDiverged(
                    f"{self.nonfinite_in_a_row} consecutive steps with non-finite losses (last: {', '.join(bad)}) "
                    f"at step {self.step}; stopped. The last good checkpoint in {self.run_dir / 'checkpoints'} "
                    f"is intact: lower optim.lr, set optim.grad_clip, or use train.precision=fp32, then "
                    f"resume with --resume {self.run_dir}"
                )
        else:
            self.nonfinite_in_a_row = 0


class RunLog:
    """Where a run's numbers go: log.jsonl (every step), TensorBoard and the progress bar (every
    ``train.log_every_steps``). Only the main process writes; the others hold no files."""

    def __init__(self, trainer: Trainer):
        acc, t = trainer.accelerator, trainer.cfg.train
        self.accelerator, self.tensorboard = acc, t.tensorboard
        main = acc.is_main_process
        if t.tensorboard:
            acc.init_trackers("tb")
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
            if self.tensorboard:
                self.accelerator.log(logs, step=step)
            if self.progress is not None:
                self.progress.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in logs.items() if k.startswith("loss/")})
        if self.progress is not None:
            self.progress.update(1)

    def metrics(self, step: int, metrics: dict[str, float]) -> None:
        if self.file is not None:
            self.file.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.tensorboard:
            self.accelerator.log(metrics, step=step)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()


def _truncate_log(path: Path, step: int) -> None:
    """On resume, drop log lines from steps after the checkpoint (they will be redone)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    write_text_atomic(path, "".join(line + "\n" for line in kept))
