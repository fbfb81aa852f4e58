"""`toolkit train` and `toolkit interpolate`: thin shells over toolkit.train and toolkit.interpolate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit.cli.common import EXIT_BAD_INPUT, DbOption, console, errors_to_exit, print_json

MODEL_HELP = ("MODEL is open_clip:<arch or model-config.json>@<weights.safetensors|.pt>, "
              "hf:<local Hugging Face CLIP folder>, or a folder written by `toolkit train`/`interpolate`. "
              "Weights are read from local files only.")


def _bad_input_errors() -> dict[type[BaseException], int]:
    from toolkit.adapters.base import ModelLoadError
    from toolkit.checkpoint import ResumeError
    from toolkit.interpolate import InterpolationError
    from toolkit.outputs import OutputExistsError
    from toolkit.snapshot import SnapshotError
    from toolkit.train_config import ConfigError

    errors: dict[type[BaseException], int] = {
        ModelLoadError: EXIT_BAD_INPUT, ConfigError: EXIT_BAD_INPUT, ResumeError: EXIT_BAD_INPUT,
        OutputExistsError: EXIT_BAD_INPUT, SnapshotError: EXIT_BAD_INPUT, InterpolationError: EXIT_BAD_INPUT,
    }
    try:
        from toolkit.samples import TrainingDataError

        errors[TrainingDataError] = EXIT_BAD_INPUT
    except ImportError:
        pass
    return errors


def _catalog_source(db: str | None, snapshot_ref: str, adapter: Any, config: Any) -> Any:
    from toolkit import distributed as dist_utils
    from toolkit.batches import CatalogBatchSource
    from toolkit.config import resolve_db_url
    from toolkit.samples import SampleConfig, load_training_records
    from toolkit.snapshot import resolve_snapshot
    from toolkit.store.db import open_store

    store = open_store(resolve_db_url(db))
    try:
        with store.session() as session:
            snapshot = resolve_snapshot(session, snapshot_ref)
            snapshot_hash = snapshot.content_hash
            records = load_training_records(session, snapshot, "train")
    finally:
        store.close()
    return CatalogBatchSource(records, adapter, config.batch_size, config.seed, dist_utils.rank(),
                              dist_utils.world_size(), config.num_workers, snapshot_hash,
                              SampleConfig(generators=config.generators))


def train(
    base: Annotated[str, typer.Option("--base", help="The model to fine-tune. " + MODEL_HELP)],
    out: Annotated[Path, typer.Option("--out", help="New folder for the fine-tuned model (must not exist).")],
    snapshot: Annotated[str, typer.Option("--snapshot", help="Snapshot to train on: latest, a hash "
                                          "(prefix of 8+ chars) or a name.")] = "latest",
    config_file: Annotated[Path | None, typer.Option(
        "--config", help="TOML or JSON file of training settings (fields of TrainConfig).")] = None,
    db: DbOption = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the unfinished run for --out from its last checkpoint "
                         "(same config, snapshot and process count).")] = False,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Cap on optimizer steps; the lr "
                                                  "schedule is fitted to it.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Global images per micro-batch, "
                                                   "split over torchrun processes.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu or cuda.")] = None,
) -> None:
    """Fine-tune the text tower with CLIC (image tower frozen); writes --out only when finished.

    Multi-GPU: torchrun --nproc_per_node N -m toolkit train … (gloo on CPU, NCCL on CUDA).
    """
    from toolkit import __version__
    from toolkit import distributed as dist_utils
    from toolkit.adapters.loading import load_model
    from toolkit.outputs import weights_sha256
    from toolkit.train import TrainConfig, run_training
    from toolkit.train_config import ConfigError

    with errors_to_exit(_bad_input_errors()):
        config = TrainConfig.from_file(config_file) if config_file else TrainConfig()
        config = config.with_overrides(max_steps=max_steps, batch_size=batch_size, device=device)
        if out.exists():
            raise ConfigError(f"{out} already exists; choose a new --out folder (nothing is overwritten)")
        adapter = load_model(base)  # before anything is created: a bad model leaves no trace
        torch_device = dist_utils.init_distributed(config.device)
        try:
            source = _catalog_source(db, snapshot, adapter, config)
        except ImportError as err:
            raise ConfigError(f"the catalog data pipeline (toolkit.data) is not installed: {err}") from err
        provenance = {"base": base, "base_weights_sha256": weights_sha256(base),
                      "snapshot": source.describe().get("snapshot"), "toolkit_version": __version__,
                      "world_size": dist_utils.world_size()}
        result = run_training(config, adapter, source, out, provenance, None, resume, torch_device)
    if dist_utils.is_main_process():
        print_json({"out": str(result.out_dir), "global_step": result.global_step,
                    "metrics": result.last_metrics})


def interpolate(
    base: Annotated[str, typer.Option("--base", help="The base model. " + MODEL_HELP)],
    tuned: Annotated[str, typer.Option("--tuned", help="Folder of a `toolkit train` run from that base.")],
    alpha: Annotated[float, typer.Option("--alpha", help="0 = base, 1 = fine-tuned; text tower only.")],
    out: Annotated[Path, typer.Option("--out", help="New folder for the blended model.")],
) -> None:
    """WiSE-FT: blend the fine-tuned text tower with the base one (the image tower must be identical)."""
    from toolkit.adapters.loading import load_model
    from toolkit.interpolate import interpolate as blend
    from toolkit.interpolate import save_interpolated

    with errors_to_exit(_bad_input_errors()):
        base_model, tuned_model = load_model(base), load_model(tuned)
        card = save_interpolated(blend(base_model, tuned_model, alpha), out, base, tuned, alpha)
    console.print(f"wrote {out} (alpha {alpha})")
    print_json({"out": str(out), **card})


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("interpolate")(interpolate)


if __name__ == "__main__":  # `python -m toolkit.cli.train …` works before the verb is registered
    standalone = typer.Typer(pretty_exceptions_enable=False)
    register(standalone)
    standalone()
