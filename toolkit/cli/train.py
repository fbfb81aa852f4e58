"""`toolkit train` and `toolkit interpolate`: thin shells over toolkit.train and toolkit.interpolate."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli.common import EXIT_BAD_INPUT, DbOption, console, errors_to_exit, print_json

MODEL_HELP = ("MODEL is open_clip:<arch or model-config.json>@<weights.safetensors|.pt>, "
              "hf:<local Hugging Face CLIP folder>, or a folder written by `toolkit train`/`interpolate`. "
              "Weights are read from local files only.")


def _bad_input_errors() -> dict[type[BaseException], int]:
    from toolkit.adapters.base import ModelLoadError
    from toolkit.anchors import AnchorError
    from toolkit.checkpoint import ResumeError
    from toolkit.distributed import DeviceError
    from toolkit.interpolate import InterpolationError
    from toolkit.outputs import OutputExistsError
    from toolkit.snapshot import SnapshotError
    from toolkit.train_config import ConfigError

    errors: dict[type[BaseException], int] = {
        ModelLoadError: EXIT_BAD_INPUT, ConfigError: EXIT_BAD_INPUT, ResumeError: EXIT_BAD_INPUT,
        OutputExistsError: EXIT_BAD_INPUT, SnapshotError: EXIT_BAD_INPUT, InterpolationError: EXIT_BAD_INPUT,
        AnchorError: EXIT_BAD_INPUT, DeviceError: EXIT_BAD_INPUT,
    }
    from toolkit.samples import TrainingDataError
    from toolkit.store.db import StoreError

    errors[TrainingDataError] = EXIT_BAD_INPUT
    errors[StoreError] = EXIT_BAD_INPUT
    from toolkit.tiles import TileError
    from toolkit.train import TrainingDivergedError

    errors[TileError] = EXIT_BAD_INPUT
    # A NaN/inf loss comes from what the run was given (lr, loss weights, base weights, data), not from a
    # fault of the toolkit: 3, "fix the input", is the README code that says what to do about it.
    errors[TrainingDivergedError] = EXIT_BAD_INPUT
    return errors


def _check_options(**options: object) -> None:
    """Each given option's value alone through TrainConfig's own checks: an out-of-range value is a bad
    option (exit 2, naming it) rather than a bad config (3). `--device cuda` on a machine without CUDA stays
    a 3 (DeviceError): the value is valid, this machine is not."""
    from toolkit.train_config import ConfigError, TrainConfig

    for name, value in options.items():
        if value is None:
            continue
        try:
            TrainConfig(**{name: value})  # type: ignore[arg-type]
        except ConfigError as err:
            raise typer.BadParameter(str(err).removeprefix("training config: "),
                                     param_hint=f"--{name.replace('_', '-')}") from None


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's or torchrun's stop) raised as an interrupt, so that everything unwinds as on
    Ctrl-C: the MLflow run ends FAILED instead of staying RUNNING, and the checkpoint stays for --resume."""


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def stop(signum: int, frame: object) -> None:
        raise _Terminated(f"stopped by signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (an embedding application): leave its handlers alone
        yield
        return
    try:
        yield
    except _Terminated:
        console.print("[bold red]stopped:[/] SIGTERM; resume with --resume")
        raise typer.Exit(128 + signal.SIGTERM) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    tiles: Annotated[str | None, typer.Option("--tiles", help="Tile cache (`toolkit data prepare`): auto (use it "
                                              "when finished for this snapshot and size), off, require.")] = None,
    compile_text: Annotated[bool | None, typer.Option("--compile-text/--no-compile-text",
                                                      help="torch.compile the text tower (GPU runs).")] = None,
    track: Annotated[bool, typer.Option(help="Track the run in MLflow ($MLFLOW_TRACKING_URI or the "
                                             "workspace store).")] = True,
) -> None:
    """Fine-tune the text tower with CLIC (image tower frozen); writes --out only when finished.

    Multi-GPU: torchrun --nproc_per_node N -m toolkit train … (gloo on CPU, NCCL on CUDA).
    """
    from toolkit import distributed as dist_utils
    from toolkit.config import resolve_db_url
    from toolkit.train import TrainConfig
    from toolkit.train_job import train_on_snapshot

    _check_options(max_steps=max_steps, batch_size=batch_size, device=device, tiles=tiles)
    with errors_to_exit(_bad_input_errors()), _sigterm_as_interrupt():
        config = TrainConfig.from_file(config_file) if config_file else TrainConfig()
        config = config.with_overrides(max_steps=max_steps, batch_size=batch_size, device=device, tiles=tiles,
                                       compile_text=compile_text)
        result = train_on_snapshot(base, snapshot, out, config, resolve_db_url(db), resume=resume, track=track)
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

    if not 0.0 <= alpha <= 1.0:  # NaN too; checked before two models load
        raise typer.BadParameter(f"{alpha} is not in [0, 1]", param_hint="--alpha")
    with errors_to_exit(_bad_input_errors()):
        base_model, tuned_model = load_model(base), load_model(tuned)
        card = save_interpolated(blend(base_model, tuned_model, alpha), out, base, tuned, alpha)
    console.print(f"wrote {out} (alpha {alpha})")
    print_json({"out": str(out), **card})


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("interpolate")(interpolate)

