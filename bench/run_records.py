"""What the issue-#19 experiment scripts share: the commit a run starts at and one JSON line per run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any


def head_commit() -> str:
    """HEAD's short hash; read it at the start of a run, since HEAD may move during a half-hour run."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def append_record(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
