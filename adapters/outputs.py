"""Model output folders that appear whole or not at all, with a `model.json` card that `load_model` reads."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from toolkit.adapters.base import ClipAdapter
from toolkit.adapters.loading import MODEL_CARD, weight_files
from toolkit.core.errors import InputError
from toolkit.core.hashing import file_sha256


class OutputExistsError(InputError):
    """The output folder already exists; the toolkit never overwrites a model."""


@contextmanager
def atomic_output_dir(out_dir: Path) -> Iterator[Path]:
    """Yield a temp folder next to `out_dir`; rename it to `out_dir` only if the block succeeds."""
    if os.path.lexists(out_dir):  # a dangling symlink too: os.replace could not put a folder there
        raise OutputExistsError(f"{out_dir} already exists; choose a new --out folder "
                                "(nothing is overwritten)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def weights_sha256(spec: str) -> str | None:
    """SHA-256 of the base model's weight file (or of the sorted name:hash lines when sharded)."""
    files = weight_files(spec)
    if not files:
        return None
    if len(files) == 1:
        return file_sha256(files[0])
    lines = "".join(f"{p.name}:{file_sha256(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def write_model_folder(adapter: ClipAdapter, folder: Path, card_extras: dict[str, Any]) -> dict[str, Any]:
    """adapter.save(folder) plus model.json (the adapter's card merged with provenance)."""
    saved = adapter.save(folder)
    clashes = sorted(set(saved) & set(card_extras))
    if clashes:  # the adapter's keys are what load_model reads: provenance must not shadow them
        raise ValueError(f"model card keys {clashes} are reserved by the {adapter.family} adapter")
    card = {**card_extras, **saved}
    (folder / MODEL_CARD).write_text(json.dumps(card, indent=2, sort_keys=True, default=str) + "\n",
                                     encoding="utf-8")
    return card
