"""`toolkit train` and `toolkit interpolate`: thin shells over toolkit.train.recipe and toolkit.train.interpolate."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli.common import DbOption, console, print_json

MODEL_HELP = ("MODEL is open_clip:<arch or model-config.json>@<weights.safetensors|.pt>, "
              "hf:<local Hugging Face CLIP folder>, or a folder written by `toolkit train`/`interpolate`. "
              "Weights are read from local files only.")


def _check_options(**options: object) -> None:
    """Each given option's value alone through TrainConfig's own checks: an out-of-range value is a bad
    option (exit 2, naming it) rather than a bad config (3). `--device cuda` on a machine without CUDA stays
    a 3 (DeviceError): the value is valid, this machine is not."""
    from toolkit.train.config import ConfigError, TrainConfig

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
    from toolkit.core.config import resolve_db_url
    from toolkit.train import distributed as dist_utils
    from toolkit.train.job import train_on_snapshot
    from toolkit.train.recipe import TrainConfig

    _check_options(max_steps=max_steps, batch_size=batch_size, device=device, tiles=tiles)
    with _sigterm_as_interrupt():
        config = TrainConfig.from_file(config_file) if config_file else TrainConfig()
        config = config.with_overrides(max_steps=max_steps, batch_size=batch_size, device=device, tiles=tiles,
                                       compile_text=compile_text)
        result = train_on_snapshot(base, snapshot, out, config, resolve_db_url(db), resume=resume, track=track)
    if dist_utils.is_main_process():
        print_json({"out": str(result.out_dir), "global_step": result.global_step,
                    "metrics": result.last_metrics})


def _alphas(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        alphas = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma list of numbers, e.g. 0.5,0.6,0.8,1",
                                 param_hint="--alphas") from None
    if not alphas or not all(0.0 <= a <= 1.0 for a in alphas):  # NaN too
        raise typer.BadParameter(f"{text!r}: every alpha must be in [0, 1]", param_hint="--alphas")
    return alphas


def interpolate(
    base: Annotated[str, typer.Option("--base", help="The base model. " + MODEL_HELP)],
    tuned: Annotated[str, typer.Option("--tuned", help="Folder of a `toolkit train` run from that base.")],
    out: Annotated[Path, typer.Option("--out", help="New folder for the blended model; with --choose-on, the "
                                      "folder that receives one blend per alpha (wise<alpha>).")],
    alpha: Annotated[float | None, typer.Option("--alpha", help="0 = base, 1 = fine-tuned; text tower only.")]
        = None,
    choose_on: Annotated[list[str] | None, typer.Option(
        "--choose-on", help="Validation benchmark (KIND:PATH as `toolkit eval --benchmark`), repeatable: blend "
                            "at every --alphas and keep the best composition whose retrieval and zero-shot stay "
                            "within the promotion gates' tolerances.")] = None,
    alphas: Annotated[str | None, typer.Option("--alphas", help="With --choose-on: comma "
                                               "list of alphas to try, e.g. 0.5,0.6,0.7,0.8,0.9,1.")] = None,
    confidence_z: Annotated[float, typer.Option("--confidence-z", min=0.0, help="With --choose-on: standard "
                                                "errors a blend's retrieval and zero-shot must clear the "
                                                "tolerance by.")] = 1.0,
    images: Annotated[Path | None, typer.Option("--images", help="Images folder for --choose-on benchmarks, "
                                                "as `toolkit eval --images`.")] = None,
    db: DbOption = None,
) -> None:
    """WiSE-FT: blend the fine-tuned text tower with the base one (the image tower must be identical).

    Either one blend at --alpha, or, with --choose-on and --alphas, the blend chosen on validation items.
    """
    from toolkit.adapters.loading import load_model
    from toolkit.train.interpolate import interpolate as blend
    from toolkit.train.interpolate import save_interpolated

    if (alpha is None) == (choose_on is None):
        raise typer.BadParameter("give either --alpha, or --choose-on with --alphas", param_hint="--alpha")
    if choose_on is not None:
        _choose_blend(base, Path(tuned), out, choose_on, _alphas(alphas), confidence_z, images, db)
        return
    assert alpha is not None
    if not 0.0 <= alpha <= 1.0:  # NaN too; checked before two models load
        raise typer.BadParameter(f"{alpha} is not in [0, 1]", param_hint="--alpha")
    base_model, tuned_model = load_model(base), load_model(tuned)
    card = save_interpolated(blend(base_model, tuned_model, alpha), out, base, tuned, alpha)
    console.print(f"wrote {out} (alpha {alpha})")
    print_json({"out": str(out), **card})


def _choose_blend(base: str, tuned: Path, out: Path, specs: list[str], alphas: list[float] | None,
                  confidence_z: float, images: Path | None, db: str | None) -> None:
    from toolkit.eval.benchmarks import load_benchmarks
    from toolkit.governance.blend import choose_blend_on_validation
    from toolkit.train.job import check_destination

    if not alphas:
        raise typer.BadParameter("--choose-on needs --alphas, e.g. 0.5,0.6,0.7,0.8,0.9,1", param_hint="--alphas")
    check_destination(out)  # before any model loads or blend is written
    benchmarks = load_benchmarks(specs, images, db)
    out.mkdir(parents=True)
    with console.status("blending and scoring on validation") as status:
        choice = choose_blend_on_validation(base, tuned, alphas, benchmarks, confidence_z=confidence_z,
                                            folder=lambda _, a: tuned if a == 1.0 else out / f"wise{a:g}",
                                            say=status.update)
    if choice.alpha is None:
        console.print("no blend kept retrieval and zero-shot within tolerance on validation")
    else:
        console.print(f"chosen: alpha {choice.alpha:g} ({choice.model})")
    print_json({"alpha": choice.alpha, "model": None if choice.model is None else str(choice.model),
                "blends": {f"{a:g}": str(m) for a, m in choice.blends.items()},
                "validation": choice.validation, "validation_standard_errors": choice.standard_errors,
                "confidence_z": choice.confidence_z})


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("interpolate")(interpolate)

