"""CLIC fine-tuning recipe: the text tower learns composition, the image tower stays bit-identical.

Lifecycle: `ClicRecipe(...).setup()` -> `.train()` -> `.cleanup()`  (or `run_training(...)`).

Features and their trade-offs:
- Text side trained, everything `is_vision_parameter` frozen: requires_grad False, eval mode, outside the
  optimizer, and encoded under no_grad (no activation memory for the image tower).
- Image features computed once (`precompute_image_features`, single images only): a frozen tower in eval
  mode makes them a pure function of the image, so each distinct image is encoded once in setup (a table of
  N × D on the device) and every batch looks its rows up instead of reading and encoding pixels.
- Reference optimisation: AdamW (0.9, 0.98), eps 1e-8, wd 0.1 except 1-D and bias/ln/bn parameters;
  peak lr 1e-6, linear warm-up over 20% of an epoch then cosine to 1e-8, stepped every optimizer step.
- Steps alternate: even = CLIC batch + ClicLoss, odd = plain CLIP loss on single images
  (`alternate_plain_steps=False` trains on CLIC batches only).
- logit_scale is clamped on the real parameter to <= ln(max_logit_scale) after every step.
- Optional torch.compile of the text tower (`compile_text`, off by default: compiling costs seconds to
  minutes up front and pays only on long GPU runs).
- Eager text encoding on each batch's used context (`encode_text_trimmed`: the padding columns dropped where
  that is exact), the same embeddings for a fraction of the cost; a compiled tower keeps the full context.
- bf16 autocast on CUDA, fp32 on CPU. Gradient accumulation over `grad_accum` micro-batches.
- DDP via torchrun: embeddings all-gathered with gradient; the text tower runs inside
  DistributedDataParallel (`distributed.TextTower`), so gradient all-reduce overlaps backward; micro-batches
  before the last of a step skip it (`no_sync`).
- Optional LoRA (peft) on text-tower Linear layers, merged into the weights before saving.
- Optional anchor distillation (`anchor_weight` > 0, toolkit.train.anchors): the base's embeddings of the anchor
  texts are computed once in setup (before any checkpoint or LoRA is applied, so a resumed run has the same
  targets); every micro-batch then encodes a sample of them and adds the anchor loss to its own.
- Atomic checkpoints every N steps with named resume state (epoch, global_step, data_offset, seed)
  checked on load; `resume=True` continues at the exact step with the identical data order.
- The output folder appears only when training has finished (temp folder, then rename).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from toolkit.adapters.base import ClipAdapter
from toolkit.adapters.outputs import OutputExistsError, atomic_output_dir, write_model_folder
from toolkit.core.components import install_hint
from toolkit.core.errors import InputError, MissingComponentError
from toolkit.core.progress import ProgressLines, wants_lines
from toolkit.data.batches import CLIC, PLAIN, BatchSource, TrainBatch
from toolkit.train import distributed as dist_utils
from toolkit.train.anchors import anchor_digest, anchor_sample
from toolkit.train.checkpoint import (
    CHECKPOINT_FILE,
    ResumeError,
    ResumeState,
    check_resume_state,
    load_checkpoint,
    resume_state_dict,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from toolkit.train.config import ConfigError, TrainConfig
from toolkit.train.loss import ClicLoss, ClipLoss, anchor_loss, hard_negative_accuracy

__all__ = ["ClicRecipe", "RunTracker", "TrainConfig", "TrainResult", "TrainingDivergedError",
           "compiled_text_encoder", "run_training", "work_dir_for"]
RESOLVED_CONFIG_FILE = "train-config.json"
log = logging.getLogger(__name__)


class TrainingDivergedError(InputError):
    """The loss became NaN or inf; the message names the step. Raised before that step is applied."""


class RunTracker(Protocol):
    """What the recipe reports to (MLflow via toolkit.tracking, or anything alike)."""

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifact(self, path: str) -> None: ...


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    global_step: int
    last_metrics: dict[str, float]


def work_dir_for(out_dir: Path) -> Path:
    """Checkpoints live beside the output, never inside it, so `out_dir` appears only when complete."""
    return out_dir.with_name(out_dir.name + ".partial")


def lr_factor(step: int, warmup_steps: int, total_steps: int, lr: float, min_lr: float) -> float:
    """Multiplier of the peak lr at `step`: linear warm-up, then cosine down to min_lr."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return (min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))) / lr


def compiled_text_encoder(adapter: ClipAdapter, backend: str = "inductor") -> Any:
    """`adapter.encode_text` through torch.compile. Attention already runs fused: open_clip and HF CLIP
    reach F.scaled_dot_product_attention. Shapes stay static (5B texts on CLIC steps, B on plain steps),
    so there are two graphs and no dynamic-shape guards."""
    return torch.compile(adapter.encode_text, dynamic=False, backend=backend)


def _no_weight_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim < 2 or "bias" in name or "ln" in name or "bn" in name


class ClicRecipe:
    def __init__(self, config: TrainConfig, adapter: ClipAdapter, batches: BatchSource, out_dir: Path,
                 provenance: dict[str, Any] | None = None, tracker: RunTracker | None = None,
                 resume: bool = False, device: torch.device | None = None,
                 anchor_texts: Sequence[str] = ()) -> None:
        self.config, self.adapter, self.batches, self.out_dir = config, adapter, batches, out_dir
        self.provenance, self.tracker, self.resume = provenance or {}, tracker, resume
        self.anchor_texts = list(anchor_texts)
        # Once, at the start: it reads the anchor file, and every checkpoint records the run as it started.
        self.config_fingerprint = config.fingerprint()
        self.device = device or torch.device(config.device)
        self.work_dir = work_dir_for(out_dir)
        self.global_step, self.epoch, self.data_offset = 0, 0, 0
        self.checkpoint_step: int | None = None  # the step of the checkpoint on disk, once there is one
        self._peft: Any = None

    # ---- setup ------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.config
        if self.out_dir.exists():
            raise OutputExistsError(f"{self.out_dir} already exists; choose a new --out folder")
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        torch.manual_seed(cfg.seed)
        model = self.adapter.model.to(self.device)
        for _, param in self.adapter.vision_parameters():
            param.requires_grad_(False)
        self._anchor_targets()
        self._freeze_text(cfg.frozen_text)
        if cfg.lora.rank > 0:
            self._apply_lora()
        self.trainable = [(n, p) for n, p in self.adapter.model.named_parameters() if p.requires_grad]
        # Eager training encodes each batch on its used context only (same embeddings, far fewer columns);
        # a compiled graph keeps the fixed context, so its shapes never change.
        self.encode_text = (compiled_text_encoder(self.adapter) if cfg.compile_text
                            else self.adapter.encode_text_trimmed)
        decay = [p for n, p in self.trainable if not _no_weight_decay(n, p)]
        no_decay = [p for n, p in self.trainable if _no_weight_decay(n, p)]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
        self.steps_per_epoch = self.batches.batches_per_epoch() // cfg.grad_accum
        if self.steps_per_epoch < 1:
            raise ConfigError(f"training config: grad_accum = {cfg.grad_accum} needs that many batches per "
                              f"optimizer step, but one epoch holds only {self.batches.batches_per_epoch()} "
                              f"batches of {cfg.batch_size}; lower grad_accum or batch_size, or add data")
        # max_steps shortens the whole schedule (warm-up and cosine end), for smoke runs and tests.
        planned = self.steps_per_epoch * cfg.epochs
        self.total_steps = min(planned, cfg.max_steps or planned)
        warmup = max(1, round(cfg.warmup_epoch_fraction * min(self.steps_per_epoch, self.total_steps)))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, warmup, self.total_steps, cfg.lr, cfg.min_lr))
        self.clic_loss = ClicLoss(cfg.loss)
        self.clip_loss = ClipLoss()
        use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        self.autocast_dtype = torch.bfloat16 if use_bf16 else None
        model.train()
        self._freeze_vision_modules()
        self.image_features = self._image_table_features()
        if self.resume:
            self._load_checkpoint()
        elif (self.work_dir / CHECKPOINT_FILE).exists():
            raise OutputExistsError(f"{self.work_dir} holds a checkpoint of an unfinished run; pass --resume "
                                    "to continue it, or delete that folder to start afresh")
        # After any resume: DDP starts by broadcasting rank 0's parameters.
        self.text_tower = dist_utils.wrap_text_tower(self.adapter.model, self.encode_text, self.device)
        self._no_sync = getattr(self.text_tower, "no_sync", contextlib.nullcontext)
        if dist_utils.is_main_process() and self.tracker is not None:
            self.tracker.log_params({"config": self.config.to_dict(), **self.provenance,
                                     "data": self.batches.describe()})

    def _anchor_targets(self, chunk: int = 1024) -> None:
        """Tokens and base embeddings of the anchor texts; the model still holds the base's weights here."""
        self.anchor_tokens: torch.Tensor | None = None
        if self.config.anchor_weight == 0:
            return
        if not self.anchor_texts:
            raise ValueError("anchor_weight > 0 needs anchor texts (toolkit.train.anchors.resolve_anchor_texts)")
        tokens = self.adapter.tokenize(self.anchor_texts).to(self.device)
        # Tokenizers cut silently at the context. CLIP's end token has the largest id (open_clip's text tower
        # finds it by argmax too), so an end token in the last position marks a text that filled the context.
        full = (tokens.argmax(dim=1) == tokens.shape[1] - 1).nonzero().flatten().tolist()
        if full and dist_utils.is_main_process():
            log.warning("%d of %d anchor texts reach the text tower's %d-token context and are cut there "
                        "(e.g. %r); only their first words are anchored, so shorten or split them",
                        len(full), len(tokens), tokens.shape[1], self.anchor_texts[full[0]][:80])
        self.adapter.model.eval()
        with torch.no_grad():
            self.anchor_base = torch.cat([self.adapter.encode_text(tokens[i:i + chunk]).float()
                                          for i in range(0, len(tokens), chunk)])
        self.anchor_tokens = tokens

    def _autocast(self) -> torch.autocast:
        """The steps' precision (bf16 autocast on CUDA unless fp32 is asked for), for every forward that must
        match theirs."""
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)

    def _image_table_features(self, chunk: int = 256) -> torch.Tensor | None:
        """The frozen image tower's features of every image in the source's table (None: batches carry
        pixels), encoded exactly as a step would encode them, so a lookup gives what a step would compute."""
        table = self.batches.image_table()
        if table is None:
            return None
        from torch.utils.data import DataLoader

        started = time.perf_counter()
        chunks = []
        loader = DataLoader(table, batch_size=chunk, num_workers=self.config.num_workers)
        with torch.no_grad(), self._autocast():
            for pixels in loader:
                chunks.append(self.adapter.encode_image(pixels.to(self.device)))
        features = torch.cat(chunks)
        if dist_utils.is_main_process():
            log.info("image features of %d distinct images computed once in %.1f s (%d x %d)", len(table),
                     time.perf_counter() - started, *features.shape)
        return features

    def _freeze_text(self, prefixes: tuple[str, ...]) -> None:
        if not prefixes:
            return
        names = [n for n, _ in self.adapter.model.named_parameters()]
        unknown = [p for p in prefixes if not any(n.startswith(p) for n in names)]
        if unknown:
            raise ConfigError(f"training config: frozen_text: no parameter name starts with {unknown}; text-side "
                              f"names include {[n for n in names if not self.adapter.is_vision_parameter(n)][:8]}")
        for name, param in self.adapter.model.named_parameters():
            if name.startswith(prefixes):
                param.requires_grad_(False)

    def _freeze_vision_modules(self) -> None:
        # Top-level children owning vision parameters stay in eval mode (no dropout, frozen norms).
        for name, child in self.adapter.model.named_children():
            if self.adapter.is_vision_parameter(f"{name}.weight"):
                child.eval()

    def _apply_lora(self) -> None:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as err:
            raise MissingComponentError("LoRA needs the optional `peft` package: "
                                        f"{install_hint('lora')}") from err
        lora = self.config.lora
        modules = dict(self.adapter.model.named_modules())
        # nn.MultiheadAttention reads out_proj.weight directly, bypassing any LoRA wrapper: skip those.
        inside_mha = {f"{n}.out_proj" for n, m in modules.items() if isinstance(m, nn.MultiheadAttention)}
        targets = [name for name, module in modules.items()
                   if isinstance(module, nn.Linear) and name not in inside_mha
                   and not self.adapter.is_vision_parameter(f"{name}.weight")
                   and (not lora.target_suffixes or name.endswith(tuple(lora.target_suffixes)))]
        if not targets:
            linear = [name for name, module in modules.items() if isinstance(module, nn.Linear)
                      and name not in inside_mha and not self.adapter.is_vision_parameter(f"{name}.weight")]
            raise ConfigError(f"training config: lora.target_suffixes: no text-tower Linear layer ends with "
                              f"{list(lora.target_suffixes)}; its Linear layers include {linear[:8]}")
        config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,  # type: ignore[arg-type]
                            target_modules=targets)
        self._peft = get_peft_model(self.adapter.model, config)  # injects in place; adapter keeps its model
        self.adapter.logit_scale.requires_grad_(True)

    # ---- train ------------------------------------------------------------------------------------
    def _kind(self, step: int) -> str:
        return PLAIN if self.config.alternate_plain_steps and step % 2 == 1 else CLIC

    def _micro_batches(self) -> Iterator[tuple[int, int, int, str, TrainBatch]]:
        """(epoch, slot, optimizer step, kind, batch) for every remaining micro-batch, epoch after epoch."""
        accum, slots_per_epoch = self.config.grad_accum, self.steps_per_epoch * self.config.grad_accum
        epoch, start = self.epoch, self.data_offset
        while epoch < self.config.epochs:
            slots = range(start, slots_per_epoch)
            steps = [epoch * self.steps_per_epoch + slot // accum for slot in slots]
            kinds = [self._kind(step) for step in steps]
            for slot, step, kind, batch in zip(slots, steps, kinds,
                                               self.batches.batches(epoch, start, kinds), strict=False):
                yield epoch, slot, step, kind, batch
            epoch, start = epoch + 1, 0

    def _forward(self, kind: str, batch: TrainBatch, draw: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of one micro-batch; `draw` numbers the micro-batch in the run (it picks the anchors)."""
        images = batch.images.to(self.device, non_blocking=True)
        tokens = batch.tokens.to(self.device, non_blocking=True)
        with self._autocast():
            if self.image_features is not None:  # images are rows of the source's image table
                image_features = self.image_features[images]
            else:
                with torch.no_grad():
                    image_features = self.adapter.encode_image(images)
            picked: list[int] = []
            if self.anchor_tokens is not None:
                picked = anchor_sample(len(self.anchor_tokens), self.config.anchor_batch, self.config.seed,
                                       draw, dist_utils.rank(), dist_utils.world_size())
            anchors = self.anchor_tokens[picked] if self.anchor_tokens is not None and picked else None
            text_features, trained = self.text_tower(tokens, anchors)
            loss_fn = self.clic_loss if kind == CLIC else self.clip_loss
            loss, terms = loss_fn(image_features.float(), text_features.float(), self.adapter.logit_scale)
            if kind == CLIC:
                terms["hard_negative_accuracy"] = hard_negative_accuracy(image_features, text_features)
            if trained is not None:
                terms["anchor"] = anchor_loss(trained.float(), self.anchor_base[picked])
                loss = loss + self.config.anchor_weight * terms["anchor"]
            return loss, terms

    def train(self) -> TrainResult:
        cfg = self.config
        stop_at = self.total_steps
        metrics: dict[str, float] = {}
        unlogged: dict[str, tuple[int, dict[str, float]]] = {}  # kind -> its latest step not yet logged
        samples, started = 0, time.perf_counter()
        accum_left = cfg.grad_accum
        non_finite = torch.zeros((), device=self.device)  # micro-batches of this step with a NaN/inf loss
        with _progress(cfg.progress and dist_utils.is_main_process(), stop_at, self.global_step) as progress:
            for epoch, slot, step, kind, batch in self._micro_batches():
                if step >= stop_at:
                    break
                # DDP reduces gradients during the backward of a step's last micro-batch only.
                with self._no_sync() if accum_left > 1 else contextlib.nullcontext():
                    loss, terms = self._forward(kind, batch, epoch * self.steps_per_epoch * cfg.grad_accum + slot)
                    non_finite += (~torch.isfinite(loss.detach())).float()  # no host sync per micro-batch
                    (loss / cfg.grad_accum).backward()  # type: ignore[no-untyped-call]
                samples += batch.images.shape[0] * dist_utils.world_size()
                accum_left -= 1
                self.epoch, self.data_offset = epoch, slot + 1
                if accum_left:
                    continue
                accum_left = cfg.grad_accum
                self._refuse_non_finite(non_finite, step, kind, terms)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                with torch.no_grad():  # the real parameter, not a copy (the reference's defect)
                    self.adapter.logit_scale.clamp_(0.0, math.log(cfg.max_logit_scale))
                self.global_step = step + 1
                metrics = {f"loss/{kind}": float(dist_utils.all_reduce_mean(loss.detach())),
                           **{f"{kind}/{k}": float(dist_utils.all_reduce_mean(v.detach()))
                              for k, v in terms.items()},
                           "lr": float(self.scheduler.get_last_lr()[0]),
                           "logit_scale": float(self.adapter.logit_scale.detach().exp()),
                           "samples_per_s": samples / max(time.perf_counter() - started, 1e-9)}
                progress(self.global_step, metrics)
                # Each kind's latest step is logged at a logging step: with alternating kinds and an even
                # log_every, logging only the step that falls on it would never show the CLIC steps.
                unlogged[kind] = (self.global_step, metrics)
                if self.tracker is not None and dist_utils.is_main_process() and (
                        self.global_step % cfg.log_every == 0 or self.global_step == stop_at):
                    for logged_step, logged in sorted(unlogged.values(), key=lambda entry: entry[0]):
                        self.tracker.log_metrics(logged, logged_step)
                    unlogged.clear()
                if self.global_step % cfg.checkpoint_every == 0 or self.global_step == stop_at:
                    self._save_checkpoint()
        return TrainResult(self._save_model(), self.global_step, metrics)

    def _refuse_non_finite(self, non_finite: torch.Tensor, step: int, kind: str,
                           terms: dict[str, torch.Tensor]) -> None:
        """Stop before a NaN/inf loss reaches the weights: nothing of this step is applied and the last
        checkpoint stays as it was. Every rank sees the summed count, so all of them stop together."""
        if float(dist_utils.all_reduce_mean(non_finite)) == 0:
            return
        bad_terms = [name for name, value in terms.items() if not torch.isfinite(value.detach()).all()]
        kept = (f"the checkpoint {self.work_dir / CHECKPOINT_FILE} (step {self.checkpoint_step}) is kept as it was"
                if self.checkpoint_step is not None else "no checkpoint was written")
        raise TrainingDivergedError(
            f"optimizer step {step + 1} ({kind} batch): the loss is not finite (non-finite terms on this "
            f"process: {bad_terms or 'none'}); the step was not applied and {kept}. Lower lr or the loss and "
            "anchor weights, or check the base model's weights")

    # ---- checkpoints and output -------------------------------------------------------------------
    def _resume_state(self) -> ResumeState:
        epoch, offset = self.epoch, self.data_offset
        if offset >= self.steps_per_epoch * self.config.grad_accum:  # the epoch is complete
            epoch, offset = epoch + 1, 0
        data = self.batches.describe()
        if self.config.anchor_weight > 0:  # an edited anchor file must not change the targets mid-run
            data = {**data, "anchors_sha256": anchor_digest(self.anchor_texts)}
        return ResumeState(epoch=epoch, global_step=self.global_step, data_offset=offset,
                           seed=self.config.seed, config_fingerprint=self.config_fingerprint,
                           data=data, world_size=dist_utils.world_size(),
                           base_weights_sha256=self.provenance.get("base_weights_sha256"))

    def _save_checkpoint(self) -> None:
        rngs: list[Any] = [rng_state()]
        if dist_utils.is_distributed():
            rngs = [None] * dist_utils.world_size()
            torch.distributed.all_gather_object(rngs, rng_state())
        if dist_utils.is_main_process():
            self.work_dir.mkdir(parents=True, exist_ok=True)
            save_checkpoint(self.work_dir / CHECKPOINT_FILE, {
                "trainable": {n: p.detach().cpu() for n, p in self.trainable},
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng": rngs, "resume": resume_state_dict(self._resume_state())})
        self.checkpoint_step = self.global_step
        dist_utils.barrier()

    def _load_checkpoint(self) -> None:
        path = self.work_dir / CHECKPOINT_FILE
        payload = load_checkpoint(path)
        state = check_resume_state(payload["resume"], self._resume_state(), path)
        try:
            with torch.no_grad():
                for name, param in self.trainable:
                    param.copy_(payload["trainable"][name])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.scheduler.load_state_dict(payload["scheduler"])
            set_rng_state(payload["rng"][dist_utils.rank()])
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
            # The resume state matched, yet the weights or states do not fit this model: a damaged file.
            raise ResumeError(f"checkpoint {path} does not fit this run ({type(err).__name__}: {err}); "
                              "delete it and start again without --resume") from err
        self.epoch, self.global_step, self.data_offset = state.epoch, state.global_step, state.data_offset
        self.checkpoint_step = state.global_step

    def _save_model(self) -> Path:
        if self._peft is not None:
            self.adapter.model = self._peft.merge_and_unload()
        if dist_utils.is_main_process():
            self.adapter.model.eval()
            with atomic_output_dir(self.out_dir) as tmp:
                card = {**self.provenance, "train_config": self.config.to_dict(),
                        "global_step": self.global_step, "data": self.batches.describe()}
                write_model_folder(self.adapter, tmp, card)
                (tmp / RESOLVED_CONFIG_FILE).write_text(_json(self.config.to_dict()), encoding="utf-8")
            shutil.rmtree(self.work_dir, ignore_errors=True)
            if self.tracker is not None:
                self.tracker.log_artifact(str(self.out_dir / RESOLVED_CONFIG_FILE))
        dist_utils.barrier()
        return self.out_dir

    # ---- cleanup ----------------------------------------------------------------------------------
    def cleanup(self) -> None:
        dist_utils.cleanup_distributed()


def run_training(config: TrainConfig, adapter: ClipAdapter, batches: BatchSource, out_dir: Path,
                 provenance: dict[str, Any] | None = None, tracker: RunTracker | None = None,
                 resume: bool = False, device: torch.device | None = None,
                 anchor_texts: Sequence[str] = ()) -> TrainResult:
    recipe = ClicRecipe(config, adapter, batches, out_dir, provenance, tracker, resume, device, anchor_texts)
    try:
        recipe.setup()
        return recipe.train()
    finally:
        recipe.cleanup()


def _json(values: dict[str, Any]) -> str:

    return json.dumps(values, indent=2, sort_keys=True) + "\n"


class _progress:
    """A rich progress bar with loss, lr and throughput on a terminal, log lines elsewhere; a no-op when
    disabled (non-main ranks, tests)."""

    def __init__(self, enabled: bool, total: int, done: int) -> None:
        self.enabled, self.total, self.done = enabled, total, done

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda step, metrics: None
        if wants_lines(sys.stderr):  # a file or CI log: plain lines, a bar would show nothing until the end
            lines = ProgressLines("step", self.total, unit="steps", done=self.done)
            self.enabled = False  # nothing to close
            return lambda step, metrics: lines.update(
                step, loss=next((v for k, v in metrics.items() if k.startswith("loss/")), float("nan")),
                lr=metrics["lr"], samples_per_s=round(metrics["samples_per_s"], 1))
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        # stderr: stdout belongs to the CLI's JSON result.
        self._bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                             TextColumn("{task.fields[info]}"), console=Console(stderr=True))
        self._bar.__enter__()
        task = self._bar.add_task("train", total=self.total, completed=self.done, info="")

        def update(step: int, metrics: dict[str, float]) -> None:
            loss = next((v for k, v in metrics.items() if k.startswith("loss/")), float("nan"))
            info = f"loss {loss:.4f}  lr {metrics['lr']:.2e}  {metrics['samples_per_s']:.1f} samples/s"
            self._bar.update(task, completed=step, info=info)

        return update

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.__exit__(None, None, None)
