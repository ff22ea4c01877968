"""The training loop: Accelerate, mixed precision, three optimizers, EMA, logging, checkpoints.

``Trainer(cfg, run_dir).fit()`` trains a plain VAE or a Larsen VAE-GAN. The iteration is
split into named steps (``discriminator_step``, ``generator_step``) over one forward pass;
see :mod:`vaegan.steps` for who learns from what.
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from . import augment, losses, steps
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, from_dict
from . import data as _data
from .data.loader import GlobalBatchSampler, batches
from .ema import EMA, recalibrate_batchnorm
from .io import save_grid, to_float, write_text_atomic
from .models import VAE, build_decoder, build_discriminator, build_encoder
from .models.layers import sync_batchnorm


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses; the last good checkpoint is intact."""


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
            raise ValueError("train.precision=fp16 needs a CUDA GPU (fp16 autocast does nothing on CPU); use bf16")
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
        self.is_gan = cfg.model.kind == "vaegan"
        micro = acc.num_processes * t.grad_accum_steps
        if t.batch_size % micro:
            raise ValueError(f"train.batch_size={t.batch_size} must be divisible by processes x "
                             f"grad_accum_steps = {micro}")
        self.local_batch = t.batch_size // micro

        # Data: a deterministic global order, this rank's slice of every batch.
        self.dataset = _data.build_dataset(cfg.data)
        res = cfg.data.resolution

        # Networks, optimizers, EMA.
        memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        nets = {"encoder": build_encoder(cfg.model, res), "decoder": build_decoder(cfg.model, res)}
        if self.is_gan:
            nets["discriminator"] = build_discriminator(cfg.model, res)
        if t.sync_batchnorm:
            nets = {k: sync_batchnorm(v) for k, v in nets.items()}
        nets = {k: v.to(self.device, memory_format=memory_format) for k, v in nets.items()}
        lrs = {"encoder": cfg.optim.lr, "decoder": cfg.optim.lr, "discriminator": cfg.optim.lr_dis or cfg.optim.lr}
        opts = {k: build_optimizer(v.parameters(), cfg.optim, lrs[k]) for k, v in nets.items()}
        names = list(nets)
        prepared = acc.prepare(*[nets[k] for k in names], *[opts[k] for k in names])
        self.nets = dict(zip(names, prepared[: len(names)]))
        self.opts = dict(zip(names, prepared[len(names) :]))
        self.memory_format = memory_format
        self.ema = EMA({k: acc.unwrap_model(self.nets[k]) for k in ("encoder", "decoder")}, t.ema_decay) \
            if t.ema_decay > 0 else None

        # Noise shared by all ranks: each draws the global batch's noise and takes its slice.
        self.noise = torch.Generator(device=self.device).manual_seed(t.seed + 1)
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

    # ------------------------------------------------------------------ steps

    def _draw(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Global-batch noise from the shared generator; this rank's slice."""
        acc = self.accelerator
        full = torch.randn((shape[0] * acc.num_processes, *shape[1:]), generator=self.noise, device=self.device)
        return full[acc.process_index * shape[0] : (acc.process_index + 1) * shape[0]]

    def _prepare_batch(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float(images.to(self.device, non_blocking=True))
        if self.cfg.data.hflip:
            flip = self._draw((x.shape[0],)) > 0
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x.contiguous(memory_format=self.memory_format)

    def _scaled(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss as backward sees it: averaged over accumulation steps, fp16 loss-scaled."""
        loss = loss / self.cfg.train.grad_accum_steps
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def _backward(self, loss: torch.Tensor, net: str | None = None, retain: bool = False,
                  leaves: list[torch.Tensor] = ()) -> None:
        """Backward of ``loss`` into one network's parameters only (all when net is None), and
        into ``leaves``, whose ``.grad`` the caller takes (see ``_take``)."""
        inputs = list(self.nets[net].parameters()) + list(leaves) if net else None
        self._scaled(loss).backward(inputs=inputs, retain_graph=retain)

    @staticmethod
    def _take(leaves: list[torch.Tensor]) -> list[torch.Tensor]:
        """The leaves' gradients (zeros where none arrived), leaving them with none."""
        grads = [torch.zeros_like(t) if t.grad is None else t.grad for t in leaves]
        for t in leaves:
            t.grad = None
        return grads

    def _grads_at(self, loss: torch.Tensor, leaves: list[torch.Tensor]) -> list[torch.Tensor]:
        """d loss / d leaves, scaled as backward scales losses."""
        self._scaled(loss).backward(inputs=leaves, retain_graph=True)
        return self._take(leaves)

    def vae_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Plain VAE: encoder and decoder minimise pixel reconstruction + beta * KL."""
        b, d = x.shape[0], self.cfg.model.latent_dim
        kl_w = losses.kl_weight(self.step, self.cfg.loss.beta, self.cfg.loss.kl_warmup_steps)
        with self.autocast():
            posterior = self.nets["encoder"](x)
            x_rec = self.nets["decoder"](posterior.sample(self._draw((b, d))))
            logs = steps.vae_losses(posterior, x_rec, x, self.cfg.loss, kl_w)
        if self._all_finite(logs):
            self._backward(logs["loss/total"])
        return logs

    def vaegan_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Larsen VAE-GAN: one forward, then the discriminator and generator steps."""
        b, d = x.shape[0], self.cfg.model.latent_dim
        kl_w = losses.kl_weight(self.step, self.cfg.loss.beta, self.cfg.loss.kl_warmup_steps)
        lc = self.cfg.loss
        kinds = augment.parse(lc.dis_augment)
        aug = augment.draw(kinds, b, lambda shape: torch.special.ndtr(self._draw(shape))) if kinds else None
        r1_weight = lc.r1_gamma / 2 * lc.r1_every_steps if lc.r1_gamma > 0 and self.step % lc.r1_every_steps == 0 else 0.0
        with self.autocast():
            fwd = steps.vaegan_forward(self.nets["encoder"], self.nets["decoder"], self.nets["discriminator"],
                                       x, self._draw((b, d)), self._draw((b, d)), lc.fake_sources,
                                       detach_fakes=True, augment_params=aug, r1=r1_weight > 0)
            logs = steps.discriminator_loss(fwd, lc, r1_weight)
            logs.update(steps.generator_losses(fwd, self.cfg.loss, kl_w))
        if not self._all_finite(logs):
            return logs
        train_dis, adv_on = self._balance(logs)
        logs["train/dis_updated"] = torch.tensor(float(train_dis))
        dis_grad_at_fakes = self.discriminator_step(fwd, logs, train_dis)
        self.generator_step(fwd, logs, kl_w, adv_on, dis_grad_at_fakes)
        return logs

    def discriminator_step(self, fwd: steps.Forward, logs: dict[str, torch.Tensor],
                           train: bool) -> list[torch.Tensor] | None:
        """The discriminator learns from the GAN loss only. A paused discriminator still runs
        its backward (scaled by zero) so that data-parallel gradient hooks stay in step.

        With the original minimax loss the same pass gives the GAN loss's gradient at the fakes
        (minus this loss's), which is returned; else None."""
        reuse = train and self.cfg.loss.adversarial == "original"
        leaves = fwd.fake_inputs if reuse else []
        self._backward(logs["loss/dis"] * float(train), "discriminator", retain=True, leaves=leaves)
        self.active["discriminator"] = train
        return [-g for g in self._take(leaves)] if reuse else None

    def generator_step(self, fwd: steps.Forward, logs: dict[str, torch.Tensor], kl_w: float, adv_on: bool,
                       gan_grad_at_fakes: list[torch.Tensor] | None) -> None:
        """Encoder: beta * KL + rec. Decoder: gamma * rec + w_adv * GAN (rec: Dis_l + pixel term).

        Both are chained from the losses' gradients at the fakes the discriminator read."""
        lc, fakes = self.cfg.loss, [f for f in (fwd.x_rec, fwd.x_prior) if f is not None]
        rec_grad = self._grads_at(logs["loss/rec"], fwd.fake_inputs[:1])[0]
        gan_grads = gan_grad_at_fakes
        if gan_grads is None:
            gan_grads = self._grads_at(logs["loss/gan"], fwd.fake_inputs) if adv_on else [torch.zeros_like(f) for f in fakes]
        w_adv = logs["weight/adv"] = self._adversarial_weight(fakes, rec_grad, gan_grads, adv_on)
        decoder_grads = [lc.gamma * rec_grad + w_adv * gan_grads[0], *(w_adv * g for g in gan_grads[1:])]
        torch.autograd.backward(fakes, [g.to(f.dtype) for g, f in zip(decoder_grads, fakes)],
                                inputs=list(self.nets["decoder"].parameters()), retain_graph=True)
        torch.autograd.backward([self._scaled(kl_w * logs["loss/kl"]), fakes[0]], [None, rec_grad.to(fakes[0].dtype)],
                                inputs=list(self.nets["encoder"].parameters()))

    def _balance(self, logs) -> tuple[bool, bool]:
        """(train the discriminator, give the decoder its adversarial term) for this step."""
        lc = self.cfg.loss
        train_dis, train_dec = True, self.step >= lc.adv_start_step
        if lc.equilibrium:
            eq_dis, eq_dec = losses.equilibrium(logs["dis/bce_real"].item(), logs["dis/bce_fake"].item(),
                                                lc.equilibrium_target, lc.equilibrium_margin)
            train_dis, train_dec = eq_dis, train_dec and eq_dec
        return train_dis, train_dec

    def _adversarial_weight(self, fakes: list[torch.Tensor], rec_grad: torch.Tensor, gan_grads: list[torch.Tensor],
                            adv_on: bool) -> torch.Tensor:
        """0 before the adversarial term starts, else loss.adv_weight times 1 or (adaptive) the ratio
        of the rec and GAN gradient norms at the decoder's last layer; rec_grad, gan_grads: the losses'
        gradients at the fakes."""
        if not adv_on:
            return torch.zeros((), device=self.device)
        if not self.cfg.loss.adaptive_weight:
            return torch.full((), self.cfg.loss.adv_weight, device=self.device)
        last = self.accelerator.unwrap_model(self.nets["decoder"]).last_layer
        unscale = self._scaled(torch.ones((), device=self.device)).detach()
        g_rec = torch.autograd.grad(fakes[0], last, (self.cfg.loss.gamma * rec_grad / unscale).to(fakes[0].dtype),
                                    retain_graph=True)[0]
        g_adv = torch.autograd.grad(fakes, last, [(g / unscale).to(f.dtype) for g, f in zip(gan_grads, fakes)],
                                    retain_graph=True)[0]
        return self.cfg.loss.adv_weight * losses.gradient_ratio(g_rec, g_adv, self.cfg.loss.adaptive_weight_max)

    def _all_finite(self, logs: dict[str, torch.Tensor]) -> bool:
        """All ranks agree: every loss term finite (a NaN anywhere skips the step everywhere)."""
        values = torch.stack([v.detach().float().reshape(()).to(self.device) for v in logs.values()])
        values = self.accelerator.reduce(values, "sum")
        ok = bool(torch.isfinite(values).all())
        self._finite = ok
        return ok

    def _optimizer_step(self) -> dict[str, torch.Tensor]:
        """Step every active optimizer once; with fp16, unscale all before one scaler update."""
        clip, scaler = self.cfg.optim.grad_clip, self.scaler
        norms = {}
        for name, opt in self.opts.items():
            if scaler is not None:
                scaler.unscale_(opt.optimizer)
            params = [p for p in self.nets[name].parameters() if p.grad is not None]
            norms[f"grad_norm/{name}"] = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
        for name, opt in self.opts.items():
            if self.active.get(name, True):
                if scaler is not None:
                    scaler.step(opt.optimizer)
                else:
                    opt.optimizer.step()
        if scaler is not None:
            scaler.update()
        return norms

    def _zero_grad(self) -> None:
        for opt in self.opts.values():
            opt.optimizer.zero_grad(set_to_none=True)

    def train_step(self, images: torch.Tensor) -> dict[str, float] | None:
        """One micro-batch; returns the step's logs when an optimizer step completed."""
        acc = self.accelerator
        x = self._prepare_batch(images)
        self.active = {}
        with acc.accumulate(*self.nets.values()):
            logs = self.vaegan_step(x) if self.is_gan else self.vae_step(x)
            if not acc.sync_gradients:
                return None
            if self._finite:
                logs.update(self._optimizer_step())
                if self.ema is not None:
                    self.ema.update({k: acc.unwrap_model(self.nets[k]) for k in ("encoder", "decoder")}, self.step)
            self._zero_grad()
        self.step += 1
        values = torch.stack([v.detach().float().reshape(()).to(self.device) for v in logs.values()])
        values = acc.reduce(values, "mean").tolist()
        out = dict(zip(logs.keys(), values))
        out["train/skipped_nonfinite"] = float(not self._finite)
        return out

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        acc = self.accelerator
        state = {
            "config": self.cfg.to_dict(),
            "step": self.step,
            "nonfinite_total": self.nonfinite_total,
            "models": {k: acc.unwrap_model(v).state_dict() for k, v in self.nets.items()},
            "optimizers": {k: v.optimizer.state_dict() for k, v in self.opts.items()},
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
            self.opts[k].optimizer.load_state_dict(state["optimizers"][k])
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
            from .io import make_grid
            tracker.add_image("samples/prior", make_grid(samples), self.step)
            tracker.add_image("samples/recon", make_grid(pairs), self.step)
        return paths

    def evaluate(self) -> dict[str, float]:
        """Download-free metrics (SWD, sharpness, reconstruction PSNR/SSIM) on the validation split.

        Runs on the main process (the models are identical on every rank); the others wait.
        """
        from .evaluate import load_reference, quick_metrics

        metrics: dict[str, float] = {}
        if self.accelerator.is_main_process:
            n = self.cfg.train.eval_num_images
            if getattr(self, "_eval_reference", None) is None:
                self._eval_reference = load_reference(self.cfg.data, n, self.cfg.data.resolution, split="val").images
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
        acc, t = self.accelerator, self.cfg.train
        main = acc.is_main_process
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.run_dir / "config.json", self.cfg.to_json() + "\n")
            _truncate_log(self.run_dir / "log.jsonl", self.step)
        if t.tensorboard:
            acc.init_trackers("tb")
        log_file = open(self.run_dir / "log.jsonl", "a") if main else None
        progress = None
        if main and t.progress:
            from tqdm.auto import tqdm
            progress = tqdm(total=t.max_steps, initial=self.step, desc=self.run_dir.name, dynamic_ncols=True)
        for net in self.nets.values():
            net.train()
        stream = batches(self.dataset, self.sampler, self.cfg.data.num_workers)
        tick, images_seen, last = time.perf_counter(), 0, {}
        try:
            while self.step < t.max_steps:
                logs = self.train_step(next(stream))
                images_seen += self.local_batch * acc.num_processes
                if logs is None:
                    continue
                self._count_nonfinite(logs)
                now = time.perf_counter()
                logs["perf/img_per_s"] = images_seen / max(now - tick, 1e-9)
                tick, images_seen, last = now, 0, logs
                if main:
                    log_file.write(json.dumps({"step": self.step, **logs}) + "\n")
                if self.step % t.log_every_steps == 0 or self.step == t.max_steps:
                    if main:
                        log_file.flush()
                    if t.tensorboard:
                        acc.log(logs, step=self.step)
                    if progress is not None:
                        progress.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in logs.items()
                                              if k.startswith("loss/")})
                if progress is not None:
                    progress.update(1)
                if t.sample_every_steps and self.step % t.sample_every_steps == 0 and main:
                    self.write_grids(f"step-{self.step:08d}")
                if t.eval_every_steps and self.step % t.eval_every_steps == 0:
                    metrics = self.evaluate()
                    if main:
                        log_file.write(json.dumps({"step": self.step, **metrics}) + "\n")
                    if t.tensorboard:
                        acc.log(metrics, step=self.step)
                if t.checkpoint_every_steps and self.step % t.checkpoint_every_steps == 0 \
                        and not self.nonfinite_in_a_row:  # never checkpoint inside a non-finite streak
                    if main:
                        log_file.flush()  # the log is complete up to every checkpoint
                    self.save()
        finally:
            if progress is not None:
                progress.close()
            if log_file is not None:
                log_file.close()
        if not (self.run_dir / "checkpoints" / f"step-{self.step:08d}").exists():
            self.save()
        grids = self.write_grids("final") if main else {}
        if t.tensorboard:
            acc.end_training()
        return {"step": self.step, "last": last, "grids": {k: str(v) for k, v in grids.items()},
                "nonfinite_total": self.nonfinite_total}

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


def _truncate_log(path: Path, step: int) -> None:
    """On resume, drop log lines from steps after the checkpoint (they will be redone)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def config_from_run(run_dir: str | Path) -> Config:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"not a run folder: {run_dir} (expected {path})")
    return from_dict(json.loads(path.read_text()))
