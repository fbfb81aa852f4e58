"""The training run's settings: one typed dataclass, loadable from JSON/TOML, overridable from the CLI.

Defaults are the CLIC reference recipe (see method.md, "What is trained").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.core.errors import InputError
from toolkit.core.hashing import file_sha256
from toolkit.negatives.registry import GENERATORS, check_generator_weights
from toolkit.train.anchors import NOUN_PHRASES
from toolkit.train.loss import ClicLossWeights


class ConfigError(InputError):
    """A training config file or override is invalid; the message names the key."""


def _file_sha256(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as err:
        raise ConfigError(f"training config: anchor_texts file {path} cannot be read: {err}") from err


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # TOML `true` must not read as 1


def _is_finite(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))  # inf or NaN would train a NaN model


def _strings(owner: object, name: str, prefix: str = "") -> tuple[str, ...]:
    """A tuple-of-strings setting (lists accepted, as JSON and TOML give them), each string non-empty."""
    value = getattr(owner, name)
    if isinstance(value, list):
        value = tuple(value)
        object.__setattr__(owner, name, value)  # frozen: set once, during construction
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"training config: {prefix}{name} must be a list of non-empty strings, got {value!r}")
    return value


def _refuse(checks: list[tuple[bool, str]], prefix: str = "") -> None:
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"training config: {prefix}{message}")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the text tower's Linear layers (needs the optional `peft`). rank 0 = full fine-tuning."""

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    # Suffixes of text-tower Linear layer names to adapt; empty = every text-tower Linear.
    target_suffixes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _refuse([
            (_is_int(self.rank) and self.rank >= 0, f"rank must be an integer >= 0 (0 = no LoRA), got {self.rank!r}"),
            (_is_finite(self.alpha) and self.alpha > 0, f"alpha must be a finite number > 0, got {self.alpha!r}"),
            (_is_finite(self.dropout) and 0 <= self.dropout < 1,
             f"dropout must be a number in [0, 1), got {self.dropout!r}"),
        ], "lora.")
        _strings(self, "target_suffixes", "lora.")


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    epochs: int = 1
    max_steps: int | None = None  # cap on optimizer steps; the lr schedule is fitted to the cap
    batch_size: int = 800  # global images per micro-batch, split evenly over ranks (reference 4 × 200)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-6
    min_lr: float = 1e-8
    warmup_epoch_fraction: float = 0.2
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    max_logit_scale: float = 100.0
    alternate_plain_steps: bool = True  # odd steps: plain CLIP loss on single images, first sentences
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU | bf16 | fp32
    device: str = "cpu"
    num_workers: int = 0
    checkpoint_every: int = 100  # optimizer steps
    log_every: int = 10
    progress: bool = True
    generators: tuple[str, ...] = ("swap_across",)  # hard-negative generators (toolkit.negatives.generators)
    # false: tried in the order listed (the first that applies makes the negative, the rest are fallbacks);
    # true: in a fresh random order per sample, so each kind of negative leads equally often.
    mix_generators: bool = False
    # With mix_generators, one weight > 0 per generator (same order): each leads a sample's order with
    # probability weight / total. A kind is learned about in proportion to its share of the negatives
    # (bench/results/demo-clic-diagnosis.md), so this is how to give one kind more. Empty = equal.
    generator_weights: tuple[float, ...] = ()
    # false: no concatenation (the paper's ablation): single images, texts [c1, c1, e1, e2, n(c1)] with a
    # within-caption negative (swap_within / replace), so L_uni is zero. The reference recipe is true.
    concatenate: bool = True
    # Tile cache (`toolkit data prepare`): auto = use it when finished for the snapshot and model size,
    # off = always decode the image files, require = refuse to start without it. Batches are identical.
    tiles: str = "auto"
    # Single images only: encode each distinct image once at the start instead of at every step. The image
    # tower is frozen and in eval mode, so the features are the same (up to the last bits of batched kernels);
    # costs N x D numbers on the device and pays from the second epoch (bench/results/train-cpu.md).
    precompute_image_features: bool = False
    compile_text: bool = False  # torch.compile the text tower (pays on GPU; first steps slower)
    # Text-side parameters kept at the base's values (name prefixes, e.g. "token_embedding"), a lever against
    # forgetting. On the demo it did not help (bench/results/ablation-demo.md). Empty = the reference.
    frozen_text: tuple[str, ...] = ()
    # Anchor distillation against forgetting (toolkit.train.anchors; weight 0 = off, the reference): every step
    # adds anchor_weight × mean ‖t − t_base‖² over `anchor_batch` anchor texts, t_base being the base's
    # embedding. anchor_texts: "noun_phrases" (mined from the snapshot's tags) or a UTF-8 file, one text per
    # line (general captions, production prompts); a relative path in a config file is read from its folder.
    anchor_weight: float = 0.0
    anchor_texts: str = NOUN_PHRASES
    anchor_batch: int = 128
    loss: ClicLossWeights = field(default_factory=ClicLossWeights)
    lora: LoraSettings = field(default_factory=LoraSettings)

    def __post_init__(self) -> None:

        # Types first (every later check compares numbers), each naming its key and the value given.
        ints = ["seed", "epochs", "batch_size", "grad_accum", "num_workers", "checkpoint_every", "log_every",
                "anchor_batch"]
        numbers = ["lr", "min_lr", "warmup_epoch_fraction", "weight_decay", "eps", "max_logit_scale",
                   "anchor_weight"]
        _refuse([(_is_int(getattr(self, k)), f"{k} must be an integer, got {getattr(self, k)!r}") for k in ints]
                + [(self.max_steps is None or _is_int(self.max_steps),
                    f"max_steps must be a whole number of steps (or absent), got {self.max_steps!r}")]
                + [(_is_finite(getattr(self, k)), f"{k} must be a finite number, got {getattr(self, k)!r}")
                   for k in numbers]
                + [(isinstance(getattr(self, k), bool), f"{k} must be true or false, got {getattr(self, k)!r}")
                   for k in ("alternate_plain_steps", "progress", "concatenate", "compile_text", "mix_generators",
                             "precompute_image_features")]
                + [(isinstance(getattr(self, k), str), f"{k} must be a string, got {getattr(self, k)!r}")
                   for k in ("precision", "device", "tiles", "anchor_texts")]
                + [(isinstance(self.loss, ClicLossWeights), "loss must be a table of loss settings"),
                   (isinstance(self.lora, LoraSettings), "lora must be a table of LoRA settings")])
        if isinstance(self.betas, list):
            object.__setattr__(self, "betas", tuple(self.betas))  # frozen: set once, during construction
        generators = _strings(self, "generators")
        _strings(self, "frozen_text")
        if isinstance(self.generator_weights, list):
            object.__setattr__(self, "generator_weights", tuple(self.generator_weights))
        _refuse([(isinstance(self.generator_weights, tuple) and all(_is_finite(w) for w in self.generator_weights),
                  f"generator_weights must be a list of numbers, got {self.generator_weights!r}")])
        try:
            check_generator_weights(generators, self.generator_weights, self.mix_generators)
        except ValueError as err:
            raise ConfigError(f"training config: {err}") from None
        weights = {k: getattr(self.loss, k) for k in ("cont", "sneg", "uni")}
        _refuse([
            (-2**63 <= self.seed < 2**64, f"seed must be in [-2**63, 2**64) (torch's range), got {self.seed}"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1"),
            # One sample per batch has no other sample to contrast with: the loss is identically 0.
            (self.batch_size >= 2, f"batch_size must be >= 2 (contrastive batches), got {self.batch_size}"),
            (self.grad_accum >= 1, "grad_accum must be >= 1"),
            (0 < self.min_lr <= self.lr, "need 0 < min_lr <= lr"),
            (0 <= self.warmup_epoch_fraction <= 1, "warmup_epoch_fraction must be in [0, 1]"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (isinstance(self.betas, tuple) and len(self.betas) == 2
             and all(_is_finite(b) and 0 <= b < 1 for b in self.betas),
             f"betas must be two numbers in [0, 1), e.g. [0.9, 0.98], got {self.betas!r}"),
            (self.eps > 0, f"eps must be > 0, got {self.eps}"),
            (self.precision in ("auto", "bf16", "fp32"), "precision must be auto, bf16 or fp32"),
            (self.device in ("cpu", "cuda"), "device must be cpu or cuda"),
            (self.num_workers >= 0, f"num_workers must be >= 0 (0 = load in the training process), got "
                                    f"{self.num_workers}"),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
            (self.log_every >= 1, f"log_every must be >= 1 (steps between logged metrics), got {self.log_every}"),
            (self.max_logit_scale > 1, "max_logit_scale must be > 1"),
            (bool(generators), "generators must name at least one generator"),
            (all(g in GENERATORS for g in generators),
             f"generators: unknown {[g for g in generators if g not in GENERATORS]}; choose from "
             f"{sorted(GENERATORS)}"),
            (self.tiles in ("auto", "off", "require"), "tiles must be auto, off or require"),
            (self.anchor_weight >= 0, "anchor_weight must be >= 0 (0 switches anchors off)"),
            (self.anchor_batch >= 1, "anchor_batch must be >= 1"),
            (bool(self.anchor_texts.strip()), "anchor_texts must be noun_phrases or a file path"),
            (all(_is_finite(w) and w >= 0 for w in weights.values()),
             f"loss weights must be finite numbers >= 0, got {weights}"),
            (self.concatenate or "swap_across" not in self.generators,
             "the swap_across generator needs concatenated pairs; with concatenate = false use "
             "swap_within or replace"),
            (not (self.precompute_image_features and self.concatenate),
             "precompute_image_features needs concatenate = false: a concatenated pair is a new image every "
             "time it is drawn, so there is nothing to compute once"),
        ])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of everything that shapes the optimisation (not logging, workers, checkpoint cadence, nor how
        pixels are read, image features computed or kernels compiled). An anchor file counts by its content,
        not its path: a copy of the config elsewhere is the same run, and an edited file is another one."""
        relevant = {k: v for k, v in self.to_dict().items()
                    if k not in ("num_workers", "log_every", "progress", "checkpoint_every", "tiles",
                                 "compile_text", "precompute_image_features")}
        if not self.generator_weights:  # equal weights: the same runs as before the setting existed
            del relevant["generator_weights"]
        if self.anchor_weight == 0:  # anchors off: their other settings shape nothing
            del relevant["anchor_texts"], relevant["anchor_batch"]
        elif self.anchor_texts != NOUN_PHRASES:
            relevant["anchor_texts"] = f"sha256:{_file_sha256(Path(self.anchor_texts))}"
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> TrainConfig:
        config: TrainConfig = _build(cls, values, where)
        return config

    @classmethod
    def from_file(cls, path: Path) -> TrainConfig:
        """Read a JSON or TOML file holding any subset of the fields ([loss] and [lora] as tables)."""
        if path.suffix not in (".json", ".toml"):
            raise ConfigError(f"training config {path} must end in .json or .toml")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read training config {path}: {err}") from err
        except UnicodeDecodeError as err:
            raise ConfigError(f"training config {path} is not UTF-8 ({err.reason} at byte {err.start}); "
                              "save it as UTF-8") from err
        try:
            values = _parse(text, path)
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(f"{path} is not valid {path.suffix[1:].upper()}: {err}") from err
        anchors = values.get("anchor_texts")
        if isinstance(anchors, str) and anchors != NOUN_PHRASES and not Path(anchors).is_absolute():
            values["anchor_texts"] = str(path.parent / anchors)  # a config's files sit beside it
        return cls.from_dict(values, str(path))

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        """Apply CLI overrides; None means "not given". Nested keys use dots: loss.uni=0."""
        values = self.to_dict()
        for key, value in overrides.items():
            if value is None:
                continue
            head, _, tail = key.partition(".")
            if tail:
                values.setdefault(head, {})[tail] = value
            else:
                values[key] = value
        return TrainConfig.from_dict(values, "overrides")


def _parse(text: str, path: Path) -> dict[str, Any]:
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        values: Any = tomllib.loads(text)
    elif path.suffix == ".json":
        values = json.loads(text)
    else:
        raise ConfigError(f"training config {path} must end in .json or .toml")
    if not isinstance(values, dict):
        raise ConfigError(f"training config {path} must hold an object/table of settings")
    return values


def _build(cls: Any, values: dict[str, Any], where: str) -> Any:
    """Construct dataclass `cls` from plain values, naming any unknown or ill-typed key."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        default = getattr(cls(), name) if name in ("loss", "lora") else fields[name].default
        if dataclasses.is_dataclass(default):
            if isinstance(value, dict):
                value = _build(type(default), value, f"{where} [{name}]")
            elif not isinstance(value, type(default)):
                raise ConfigError(f"{where}: {name} must be a table of settings")
        elif isinstance(default, tuple):
            value = tuple(value) if isinstance(value, list | tuple) else value
        elif isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be true or false, got {value!r}")
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:  # a JSON integer beyond any float
                raise ConfigError(f"{where}: {name} is too large, got {value!r}") from None
        expected = type(default)
        if default is not None and not dataclasses.is_dataclass(default) and not isinstance(value, expected):
            raise ConfigError(f"{where}: {name} must be {expected.__name__}, got {value!r}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (ConfigError, ValueError) as err:  # a dataclass's own validation (e.g. every loss term switched off)
        raise ConfigError(f"{where}: {err}") from err
