"""Shadow rollout: run champion and challenger text encoders on the same queries against an existing
image-embedding index and report how the results move. Torch-free (numpy + the runtime).

Because the image tower is frozen, the index built with the base model stays valid for both bundles;
this report shows what users would see change before the challenger takes traffic.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.errors import InputError
from toolkit.runtime.encoder import TextEncoder


class RolloutError(InputError):
    """A shadow comparison's input is unusable: the index, its ids, the queries, k, or where the report goes."""


@dataclass(frozen=True)
class QueryShift:
    query: str
    overlap: float  # |top-k champion ∩ top-k challenger| / k
    mean_rank_change: float  # over items in both lists (nan if none shared)
    entered: list[str]  # in the challenger's top-k only
    left: list[str]  # in the champion's top-k only


def load_index(index_path: Path, ids_path: Path | None = None) -> tuple[np.ndarray, list[str]]:
    """Image embeddings (.npy, [N, D]) and their ids: `ids_path`, or `<index>.ids.txt` / `.ids.json`
    next to it (one id per line / a JSON list)."""
    try:
        embeddings = np.load(index_path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise RolloutError(f"index {index_path} is not a readable .npy array: {err}") from err
    if embeddings.ndim != 2 or 0 in embeddings.shape:
        raise RolloutError(f"index {index_path} must be a non-empty 2-D [images, dim] array, got shape "
                         f"{embeddings.shape}")
    if embeddings.dtype.kind not in "fiu":  # bool, complex, strings: not embeddings
        raise RolloutError(f"index {index_path} holds {embeddings.dtype} values, not real numbers")
    if not np.isfinite(embeddings).all():
        bad = int(np.flatnonzero(~np.isfinite(embeddings).all(axis=1))[0])
        raise RolloutError(f"index {index_path}: row {bad} holds NaN or infinite values")
    candidates = (
        [ids_path] if ids_path else [index_path.with_suffix(".ids.txt"), index_path.with_suffix(".ids.json")]
    )
    found = next((p for p in candidates if p is not None and p.is_file()), None)
    if found is None:
        raise RolloutError(f"no ids for index {index_path}: expected one of {[str(p) for p in candidates]}")
    ids = _read_ids(found)
    if len(ids) != len(embeddings):
        raise RolloutError(f"{found} has {len(ids)} ids but {index_path} has {len(embeddings)} rows")
    repeated = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if repeated:
        raise RolloutError(f"{found}: ids must be unique; repeated: {repeated[:5]}")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return (embeddings / np.maximum(norms, 1e-12)).astype(np.float32), ids


def _read_ids(path: Path) -> list[str]:
    """One id per line (.txt) or a JSON list of strings or numbers (.json)."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix != ".json":
            return [line for line in text.splitlines() if line]
        ids = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RolloutError(f"ids file {path} is unreadable: {err}") from err
    if not isinstance(ids, list) or not all(isinstance(i, str | int) and not isinstance(i, bool) for i in ids):
        raise RolloutError(f"ids file {path} must hold a JSON list of strings or integers")
    return [str(i) for i in ids]


def read_queries(path: Path) -> list[str]:
    """One query per line (blank lines skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RolloutError(f"query file {path} is unreadable (one UTF-8 query per line expected): {err}") from err
    queries = [line.strip() for line in text.splitlines() if line.strip()]
    if not queries:
        raise RolloutError(f"query file {path} has no queries (expected one per line)")
    return queries


def top_k(text_embeddings: np.ndarray, index: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the k most similar images per query, best first (ties: lower index first)."""
    scores = text_embeddings @ index.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def compare_rankings(
    queries: Sequence[str], champion: np.ndarray, challenger: np.ndarray, ids: Sequence[str]
) -> list[QueryShift]:
    shifts: list[QueryShift] = []
    k = champion.shape[1]
    for query, old, new in zip(queries, champion, challenger, strict=True):
        old_rank = {int(i): r for r, i in enumerate(old)}
        new_rank = {int(i): r for r, i in enumerate(new)}
        shared = old_rank.keys() & new_rank.keys()
        changes = [abs(old_rank[i] - new_rank[i]) for i in shared]
        shifts.append(
            QueryShift(
                query=query,
                overlap=len(shared) / k,
                mean_rank_change=float(np.mean(changes)) if changes else float("nan"),
                entered=[ids[i] for i in new if int(i) not in old_rank],
                left=[ids[i] for i in old if int(i) not in new_rank],
            )
        )
    return shifts


def _latencies_ms(encoder: Any, queries: Sequence[str]) -> np.ndarray:
    timings = []
    for query in queries:
        start = time.perf_counter()
        encoder.encode([query])
        timings.append((time.perf_counter() - start) * 1000.0)
    return np.asarray(timings)


def _percentiles(values: np.ndarray) -> dict[str, float]:
    return {f"p{q}": float(np.percentile(values, q)) for q in (50, 90, 95, 99)}


def shadow_report(
    champion_dir: Path,
    challenger_dir: Path,
    queries: Sequence[str],
    index_path: Path,
    k: int = 10,
    ids_path: Path | None = None,
    most_changed: int = 10,
    variant: str = "fp32",
) -> dict[str, Any]:

    index, ids = load_index(index_path, ids_path)
    if not 1 <= k <= len(ids):
        raise RolloutError(f"--k {k} must be between 1 and the index size {len(ids)}")
    # A shadow comparison serves nothing: it is how an unapproved challenger gets judged.
    encoders = {
        "champion": TextEncoder(champion_dir, variant, allow_unapproved=True),
        "challenger": TextEncoder(challenger_dir, variant, allow_unapproved=True),
    }
    for role, encoder in encoders.items():
        if encoder.embed_dim != index.shape[1]:
            raise RolloutError(
                f"{role} bundle embeds to {encoder.embed_dim} dims but index {index_path} has "
                f"{index.shape[1]}; the index was built with a different base model"
            )
    rankings = {role: top_k(enc.encode(queries), index, k) for role, enc in encoders.items()}
    shifts = compare_rankings(queries, rankings["champion"], rankings["challenger"], ids)
    latency = {role: _percentiles(_latencies_ms(enc, queries)) for role, enc in encoders.items()}
    overlaps = np.asarray([s.overlap for s in shifts])
    bases = {role: enc.manifest.get("base_weights_sha256") for role, enc in encoders.items()}
    return {
        "k": k,
        "queries": len(queries),
        "index": str(index_path),
        "images": len(ids),
        "champion": str(champion_dir),
        "challenger": str(challenger_dir),
        "variant": variant,
        "same_base_weights": bases["champion"] == bases["challenger"],
        "mean_overlap": float(overlaps.mean()),
        "identical_top_k_share": float((overlaps == 1.0).mean()),
        "latency_ms": latency,
        "most_changed": [
            asdict(s) for s in sorted(shifts, key=lambda s: (s.overlap, s.query))[:most_changed]
        ],
        "per_query": [asdict(s) for s in shifts],
    }


def write_report(report: dict[str, Any], path: Path) -> None:
    try:
        path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    except OSError as err:
        raise RolloutError(f"--report {path} cannot be written: {err}; name a writable file") from err


def log_shadow_report_to_mlflow(
    report: dict[str, Any], artifact_file: str = "rollout/shadow_report.json"
) -> None:
    """Log the summary numbers as metrics and the full report as a JSON artifact on the active run."""
    import mlflow

    if mlflow.active_run() is None:
        raise RuntimeError("no active MLflow run: call inside `with mlflow.start_run():`")
    metrics = {
        "shadow/mean_overlap": report["mean_overlap"],
        "shadow/identical_top_k_share": report["identical_top_k_share"],
    }
    for role, percentiles in report["latency_ms"].items():
        metrics.update({f"shadow/{role}_latency_{p}_ms": v for p, v in percentiles.items()})
    mlflow.log_metrics(metrics)
    mlflow.log_dict(report, artifact_file)
