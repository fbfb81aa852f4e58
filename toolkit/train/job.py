"""`train_on_snapshot`: everything `toolkit train` does around the recipe.

Load the base model, read the snapshot's training records and the reviewers' negative exclusions from the
catalog, open the MLflow run (main process only) with lineage (snapshot as dataset input, base-weights
hash, code version), train, and record the run id in the output's model.json so eval and export can
name their parent run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from toolkit import __version__
from toolkit.adapters.loading import load_model
from toolkit.adapters.outputs import weights_sha256
from toolkit.catalog.db import open_store
from toolkit.catalog.review_models import excluded_negative_keys
from toolkit.catalog.snapshot import resolve_snapshot
from toolkit.core.components import require
from toolkit.core.config import redact_url, workspace_dir
from toolkit.data.batches import CatalogBatchSource
from toolkit.data.datasets import ImageLoadError, missing_image_files
from toolkit.data.records import load_training_records
from toolkit.data.samples import SampleConfig
from toolkit.data.tile_cache import resolve_tile_cache
from toolkit.tracking import Lineage, require_tracking, tracked_run
from toolkit.train import distributed as dist_utils
from toolkit.train.anchors import anchor_digest, resolve_anchor_texts
from toolkit.train.config import ConfigError
from toolkit.train.recipe import TrainConfig, TrainResult, run_training


def _catalog_inputs(db_url: str, snapshot_ref: str) -> tuple[list[Any], str, dict[str, Any], frozenset[str]]:

    store = open_store(db_url)
    try:
        with store.session() as session:
            snapshot = resolve_snapshot(session, snapshot_ref)
            records = load_training_records(session, snapshot, "train")
            snapshot_hash, counts = snapshot.content_hash, dict(snapshot.counts)
        excluded = excluded_negative_keys(store)
    finally:
        store.close()
    return records, snapshot_hash, counts, excluded


def check_destination(out: Path) -> None:
    """Refuse an --out that exists or cannot become a folder (an existing file on its path, a read-only
    parent) now, instead of at the first checkpoint after training steps. The checkpoints go beside it."""
    if out.is_symlink() and not out.exists():  # the final rename cannot replace a link: refuse before the steps
        raise ConfigError(f"--out {out} is a symbolic link to {os.readlink(out)}, which does not exist; "
                          "give the real folder path, or remove the link")
    if out.exists():
        raise ConfigError(f"{out} already exists; choose a new --out folder (nothing is overwritten)")
    for parent in out.absolute().parents:
        if not parent.exists():
            continue
        if not parent.is_dir():
            raise ConfigError(f"--out {out}: {parent} is a file, not a folder; choose another --out")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"--out {out}: the folder {parent} is not writable; choose another --out")
        return


def sample_config(config: TrainConfig) -> SampleConfig:
    """How the training config assembles each sample's texts."""
    return SampleConfig(generators=config.generators, concatenate=config.concatenate,
                        mix_generators=config.mix_generators, generator_weights=config.generator_weights)


def train_on_snapshot(base: str, snapshot_ref: str, out: Path, config: TrainConfig, db_url: str, *,
                      resume: bool = False, track: bool = True, workspace: Path | None = None) -> TrainResult:
    """Fine-tune `base` on a catalog snapshot's train split; writes `out` only when finished.

    Pixels come from the workspace's tile cache when `config.tiles` allows and it is finished for this
    snapshot and the model's input size (`toolkit data prepare`), else from the image files.
    Anchor texts (`anchor_weight` > 0) are mined from the snapshot's stored tags or read from their file
    before the run starts, and identified in the provenance by source, count and digest.
    """

    check_destination(out)  # before the model loads: a bad --out must not cost a load, let alone steps
    if track:
        require_tracking()  # a dead tracking server is refused now, not after the steps
    if config.lora.rank > 0:
        require("lora")  # before the MLflow run opens: a missing peft must not leave a FAILED run behind
    adapter = load_model(base)  # before anything is created: a bad model leaves no trace
    device = dist_utils.init_distributed(config.device)
    records, snapshot_hash, counts, excluded = _catalog_inputs(db_url, snapshot_ref)
    anchors = (resolve_anchor_texts(config.anchor_texts, (s for r in records for s in r.sentences))
               if config.anchor_weight > 0 else [])
    tile_cache = resolve_tile_cache(config.tiles, workspace_dir(workspace), snapshot_hash,
                                   adapter.image_norm.size, {r.sha256 for r in records})
    samples = sample_config(config)
    source = CatalogBatchSource(records, adapter, config.batch_size, config.seed, dist_utils.rank(),
                                dist_utils.world_size(), config.num_workers, snapshot_hash, samples,
                                excluded=sorted(excluded),
                                tile_cache=tile_cache, pin_memory=device.type == "cuda",
                                image_features=config.precompute_image_features)
    if "decode" in source.data_path.values():  # tiles alone need no image file
        missing = missing_image_files(records)
        if missing:
            raise ImageLoadError(f"image files of snapshot {snapshot_hash[:12]} are missing: "
                                 f"{', '.join(map(str, missing))}"
                                 f"{' (the first 10)' if len(missing) == 10 else ''}; restore them or re-ingest")
    provenance: dict[str, Any] = {
        "base": base, "base_weights_sha256": weights_sha256(base), "snapshot": snapshot_hash,
        "toolkit_version": __version__, "world_size": dist_utils.world_size(),
        "excluded_negatives": len(excluded), "data_path": source.data_path}
    if anchors:
        provenance["anchors"] = {"source": config.anchor_texts, "count": len(anchors),
                                 "sha256": anchor_digest(anchors)}
    tracking = _tracked(provenance, db_url, counts) if track and dist_utils.is_main_process() else nullcontext()
    with tracking as run:
        if run is not None:
            provenance["mlflow_run_id"] = run.run_id
        result = run_training(config, adapter, source, out, provenance, run, resume, device, anchors)
        if run is not None:
            run.log_artifact(result.out_dir / "model.json")
    return result


@contextmanager
def _tracked(provenance: dict[str, Any], db_url: str, counts: dict[str, Any]) -> Iterator[Any]:
    """The training run in MLflow; the recipe itself logs the config, provenance and step metrics."""

    lineage = Lineage(kind="train", snapshot=provenance["snapshot"],
                      base_weights_sha256=provenance["base_weights_sha256"], catalog=redact_url(db_url),
                      extra={"base": provenance["base"]})
    with tracked_run(lineage, run_name="train") as run:
        run.log_snapshot_input(provenance["snapshot"], db_url, counts)
        yield run
