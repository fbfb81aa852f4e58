"""`toolkit demo ...`: the generated compositional domain and its small base CLIP.

    toolkit demo generate --out DIR           scenes, manifests and held-out evaluation files
    toolkit demo pretrain --data DIR --out M  pretrain the base CLIP on DIR/pretrain (alt-text captions)
    toolkit demo pretrain --recipe two-stage --out M   the two-stage model of issue #19, from the base
    toolkit demo base --out M                 copy the committed base CLIP instead (same recipe, prebuilt)
    toolkit demo evaluate --data DIR --model M   swap-attribute, two-object retrieval, zero-shot, per kind
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from toolkit.cli.common import DbOption, JsonOption, console, print_json, print_result

demo_app = typer.Typer(help="The generated demo domain (coloured shapes in relations) and its base CLIP.",
                       no_args_is_help=True)


@demo_app.command("generate")
def generate(
    out: Annotated[Path, typer.Option("--out", help="New or empty folder to write the demo data into.")],
    seed: Annotated[int, typer.Option(help="Everything generated is a function of this seed.")] = 0,
    pretrain_images: Annotated[int, typer.Option(help="Alt-text images for base pretraining (at 64 px).")] = 20000,
    domain_images: Annotated[int, typer.Option(help="Multi-sentence images: the data to ingest.")] = 12000,
    image_size: Annotated[int, typer.Option(min=16, help="Side in pixels of every image but the alt-text "
                                                       "corpus.")] = 128,
    eval_images: Annotated[int, typer.Option(help="Held-out two-object images (swap-att, retrieval).")] = 500,
    zeroshot_per_class: Annotated[int, typer.Option(help="Held-out single-object images per class.")] = 25,
    json_output: JsonOption = False,
) -> None:
    """Write PNG scenes with JSONL manifests (pretrain/, domain/) and held-out evaluation sets (eval/)."""
    from toolkit.demo.generate import GenerateConfig, generate_demo_data

    config = GenerateConfig(seed=seed, pretrain_images=pretrain_images, domain_images=domain_images,
                            image_size=image_size, eval_two_object_images=eval_images,
                            zeroshot_images_per_class=zeroshot_per_class)
    with console.status("rendering scenes"):
        paths = generate_demo_data(out, config)
    print_result({"out": str(paths.root), "domain_manifest": str(paths.domain_manifest),
                  "pretrain_manifest": str(paths.pretrain_manifest), "test": str(paths.test.root),
                  "validation": str(paths.validation.root)}, json_output)


@demo_app.command("pretrain")
def pretrain(
    out: Annotated[Path, typer.Option("--out", help="Folder for the base model (a MODEL for other verbs).")],
    recipe: Annotated[str, typer.Option(help="alt-text: the demo base, on DIR/pretrain; two-stage: an image "
                                             "tower that knows binding and relations with a bag-of-words "
                                             "text tower, started from --init (issue #19).")] = "alt-text",
    data: Annotated[Path | None, typer.Option("--data", help="Folder written by `toolkit demo generate` "
                                                             "(alt-text recipe).")] = None,
    init: Annotated[Path | None, typer.Option("--init", help="two-stage: the alt-text model to start from "
                                                             "(default: the committed base).")] = None,
    steps: Annotated[int | None, typer.Option(help="alt-text: optimiser steps (default: the committed "
                                                   "model's).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="alt-text: image–caption pairs per step (default: the "
                                                        "committed model's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for initialisation, scenes and batch order.")] = 0,
    json_output: JsonOption = False,
) -> None:
    """Pretrain the demo's models. Unset options keep the committed models' recipes, so the defaults rebuild
    `toolkit/demo/base` (alt-text, with --data) and `toolkit/demo/base-two-stage` (two-stage, the demo's base)."""
    from rich.progress import Progress

    from toolkit.core.errors import InputError

    if recipe not in ("two-stage", "alt-text"):
        raise InputError(f"--recipe must be two-stage or alt-text, got {recipe!r}")
    if recipe == "two-stage" and (data, steps, batch_size) != (None, None, None):
        raise InputError("--data, --steps and --batch-size are settings of --recipe alt-text; the two-stage "
                         "recipe renders its own scenes")
    if recipe == "alt-text" and init is not None:
        raise InputError("--init is a setting of the two-stage recipe; the alt-text recipe starts from scratch")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("pretraining", total=None)

        def on_step(step: int, loss: float, stage: str = "") -> None:
            progress.update(task, completed=step + 1, description=f"pretraining {stage} (loss {loss:.3f})")

        if recipe == "two-stage":
            from toolkit.demo.two_stage import TwoStageConfig, pretrain_two_stage

            config = TwoStageConfig(seed=seed)
            if init is not None:
                config = replace(config, init_from=str(init))
            summary = pretrain_two_stage(out, config, on_step=lambda stage, step, loss: on_step(step, loss, stage))
            print_result({"model": str(out), **{k: v for k, v in summary.items() if k.endswith("seconds")}},
                         json_output)
            return
        from toolkit.demo.pretrain import PretrainConfig
        from toolkit.demo.pretrain import pretrain as run_pretrain

        if data is None:
            raise InputError("--recipe alt-text reads DIR/pretrain: pass --data DIR (from `toolkit demo "
                             "generate`)")
        alt = PretrainConfig(seed=seed)
        alt = replace(alt, steps=steps or alt.steps, batch_size=batch_size or alt.batch_size)
        summary = run_pretrain(data, out, alt, on_step=on_step)
    print_result({"model": str(out), "train_seconds": summary["train_seconds"],
                  "first_loss": summary["first_loss"], "final_loss": summary["final_loss"]}, json_output)


@demo_app.command("base")
def base(
    out: Annotated[Path, typer.Option("--out", help="New or empty folder for the base model.")],
) -> None:
    """Copy the demo's committed base CLIP (what `toolkit demo pretrain --recipe two-stage` builds) to OUT."""
    from toolkit.demo.pretrain import copy_bundled_base

    copy_bundled_base(out)
    console.print(f"base model: {out}")


@demo_app.command("evaluate")
def evaluate(
    data: Annotated[Path, typer.Option("--data", help="Folder written by `toolkit demo generate`.")],
    model: Annotated[str, typer.Option("--model", help="MODEL spec or folder (see `toolkit --help`).")],
    json_output: JsonOption = False,
) -> None:
    """Score MODEL on the held-out demo sets: swap-attribute, two-object retrieval, zero-shot, and one set per
    composition kind in wordings kept out of training.

    The same scores `toolkit eval` computes; this only fills in the benchmark specs for a demo folder.
    """
    from toolkit.demo.chain import evaluate_held_out
    from toolkit.eval.report import results_table

    results = evaluate_held_out(model, data)
    if json_output:
        print_json(results)
    else:
        console.print(results_table({model: results}))


@demo_app.command("run")
def run(
    db: DbOption = None,
    config: Annotated[Path | None, typer.Option("--config", help="CLIC training settings (TOML/JSON); default: "
                                                "the demo's own clic-demo.toml.")] = None,
    pretrain_base: Annotated[bool, typer.Option("--pretrain", help="Pretrain the base CLIP from scratch (the "
                                                "alt-text model, then the two-stage base from it: about an hour "
                                                "on 2 cores) instead of using the committed one.")] = False,
    json_output: JsonOption = False,
) -> None:
    """The whole chain on the generated domain: generate, base, ingest, snapshot, train, evaluate.

    Uses its own catalog (`$TOOLKIT_WORKSPACE/demo/catalog.db` unless --db) and reuses every finished step
    on a second run. Prints base against candidate with the demo's targets.
    """
    from toolkit.core.config import workspace_dir
    from toolkit.demo.chain import DEMO_TRAIN_CONFIG, DemoSettings, run_demo

    workspace = workspace_dir()
    settings = DemoSettings(workspace=workspace, db_url=db or f"sqlite:///{workspace / 'demo' / 'catalog.db'}",
                            train_config=config or DEMO_TRAIN_CONFIG, pretrain=pretrain_base)
    summary = run_demo(settings, say=lambda message: console.print(f"[bold]demo[/] {message}"))
    if json_output:
        print_json(summary)
        return
    from toolkit.eval.report import results_table

    console.print(results_table(summary["results"], summary["paired"]))
    alpha = summary["wise_ft"]["alpha"]
    console.print(f"trained run {summary['trained']}; candidate = "
                  + ("the trained run unblended (no WiSE-FT blend passed on validation)" if alpha is None
                     else f"WiSE-FT blend alpha {alpha:g}, chosen on the validation sets (retrieval and "
                     f"zero-shot within tolerance by {summary['wise_ft']['confidence_z']:g} standard error(s))"))
    console.print(headline_table(summary))
    for check, ok in summary["targets_met"].items():
        console.print(f"  {'met ' if ok else 'MISSED'} {check}")
    console.print(f"evaluation run {summary['evaluation_run']}; results in {summary['results_folder']}")
    console.print("seconds per stage: " + ", ".join(f"{stage} {s:g}" for stage, s in summary["seconds"].items()))


def headline_table(summary: dict[str, Any]) -> Table:
    """The demo's headline figures from `run_demo`'s summary: base, trained run, candidate, change and its
    standard error."""
    table = Table(title="base -> candidate on held-out test items (points)")
    for column in ("metric", "base", "trained, unblended", "candidate", "delta", "standard error"):
        table.add_column(column)
    errors = summary["delta_standard_error"]
    for key, before in summary["base"].items():
        # Two decimals: a 400-image set moves in 0.25-point steps, and 71.75 must not read as 71.8.
        table.add_row(key, f"{before:.2f}", f"{summary['trained_unblended'][key]:.2f}",
                      f"{summary['candidate'][key]:.2f}", f"{summary['delta'][key]:+.2f}",
                      f"{errors[key]:.2f}" if key in errors else "-")
    return table


def register(app: typer.Typer) -> None:
    app.add_typer(demo_app, name="demo")
