"""`toolkit export`, `toolkit verify`, `toolkit rollout shadow`: thin shells over toolkit.export.*."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli.common import DbOption, JsonOption, console, print_json


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
    app.command("verify")(verify_command)
    rollout = typer.Typer(
        help="Compare a challenger bundle with the champion before switching traffic.", no_args_is_help=True
    )
    rollout.command("shadow")(shadow_command)
    app.add_typer(rollout, name="rollout")


APPROVE_HELP = (
    "KIND:PATH, repeatable, as `toolkit eval --benchmark`: re-score fp32 torch and every variant on these "
    "items (retrieval/domain read the catalog at --db); a variant is approved only within "
    "--approve-tolerance points on every score (composition, retrieval R@5, zero-shot top-1)."
)


def export_command(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="MODEL spec: open_clip:<arch|config.json>@<weights>, hf:<folder>, or a run folder.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="New, empty folder for the bundle.")],
    variants: Annotated[
        str,
        typer.Option(
            "--variants",
            help="Comma list of fp32,fp16,int8 (fp32 is always built: it is the parity reference).",
        ),
    ] = "fp32",
    source_run: Annotated[
        str | None,
        typer.Option("--source-run", help="Training run id to record (default: mlflow_run_id of a run folder)."),
    ] = None,
    base_weights: Annotated[
        Path | None,
        typer.Option(
            "--base-weights",
            help="Base (pre-fine-tuning) weights file; its SHA-256 ties the bundle to image indexes "
            "(default: base_weights_sha256 of a run folder).",
        ),
    ] = None,
    eval_metrics: Annotated[
        Path | None,
        typer.Option("--eval-metrics", help="JSON object of evaluation scores to record in the manifest."),
    ] = None,
    parity_captions: Annotated[
        Path | None,
        typer.Option(
            "--parity-captions",
            help="Text file, one held-out caption per line, checked for "
            "parity on top of the built-in edge cases.",
        ),
    ] = None,
    approve_on: Annotated[list[str] | None, typer.Option("--approve-on", help=APPROVE_HELP)] = None,
    approve_tolerance: Annotated[
        float, typer.Option("--approve-tolerance", help="Points a variant may lose on any approval score.")
    ] = 0.5,
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Images folder for --approve-on benchmarks, as `toolkit eval --images`."),
    ] = None,
    approve_device: Annotated[
        str,
        typer.Option("--approve-device", help="torch device (cpu, cuda) for the fp32 torch reference scores of "
                     "--approve-on; the ONNX variants are scored on the CPU provider, as the runtime serves them."),
    ] = "cpu",
    db: DbOption = None,
    with_image: Annotated[
        bool, typer.Option("--with-image", help="Also export the frozen image encoder (fp32).")
    ] = False,
    layout: Annotated[
        str,
        typer.Option("--layout", help="bundle, or hf: also the transformers.js / optimum files (config.json, "
                     "onnx/text_model*.onnx), hashed in the same manifest."),
    ] = "bundle",
    allow_random_init: Annotated[
        bool,
        typer.Option(
            "--allow-random-init", help="Accept a spec without weights (benchmarks and tests only)."
        ),
    ] = False,
    track: Annotated[bool, typer.Option(help="Record the export as an MLflow run (kind=export).")] = True,
    json_out: JsonOption = False,
) -> None:
    """Export the text encoder to ONNX with parity checks and write a verified bundle.

    With --approve-on, fp16/int8 variants are re-scored on evaluation items and approved only within
    tolerance; the runtime refuses unapproved variants. Without it only fp32 is approved.
    """
    from toolkit.export.job import ExportRequest, run_export
    from toolkit.export.optimize import parse_variants

    try:
        chosen = parse_variants(variants)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--variants") from err
    request = ExportRequest(
        model=model, out=out, variants=tuple(chosen), source_run=source_run, base_weights=base_weights,
        eval_metrics=eval_metrics, parity_captions=parity_captions, approve_on=tuple(approve_on or ()),
        approve_tolerance=approve_tolerance, images=images, approve_device=approve_device, db=db,
        with_image=with_image, layout=layout, allow_random_init=allow_random_init, track=track)
    with console.status("exporting") as status:
        exported = run_export(request, progress=status.update)
    manifest, run_id = exported.manifest, exported.run_id
    summary = {"bundle": str(out), "variants": manifest["variants"], "parity": manifest["parity"],
               "approval": manifest["approval"], "mlflow_run_id": run_id}
    if json_out:
        print_json(summary)
        return
    for name, result in manifest["parity"].items():
        approved = "approved" if manifest["variants"][name]["approved"] else "NOT approved"
        typer.echo(
            f"{name}: min cosine {result['min_cosine']:.6f}, max abs diff {result['max_abs_diff']:.2e}, "
            f"tokens identical {result['tokens_identical']}; {approved}"
        )
    typer.echo(f"bundle written to {out}" + (f" (MLflow run {run_id})" if run_id else ""))


def verify_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder written by `toolkit export`.")],
    provider: Annotated[
        str | None,
        typer.Option(
            "--provider",
            help="Also check that this ONNX Runtime execution provider (e.g. CUDAExecutionProvider, with "
            "onnxruntime-gpu) encodes the parity captions as the CPU does, where export approved the bundle.",
        ),
    ] = None,
    variant: Annotated[
        list[str] | None, typer.Option("--variant", help="Variant(s) to check on --provider (default: all).")
    ] = None,
    min_cosine: Annotated[
        float, typer.Option("--min-cosine", help="Least cosine to the CPU embedding, per caption, on --provider.")
    ] = 0.9999,
    json_out: JsonOption = False,
) -> None:
    """Exit 0 only if every file of the bundle matches its manifest (exit 5 if altered).

    With --provider, every checked variant must also encode the parity captions there as on the CPU
    (exit 5 if not; 3 if the provider cannot run here).
    """
    from toolkit.core.errors import InputError, Refused
    from toolkit.export.parity import check_provider_parity, parity_report
    from toolkit.runtime.manifest import verify_bundle

    if not -1.0 <= min_cosine <= 1.0:  # NaN too: a cosine bound outside [-1, 1] passes or fails everything
        raise typer.BadParameter(f"{min_cosine} is not a cosine in [-1, 1]", param_hint="--min-cosine")
    if not bundle.is_dir():
        raise InputError(f"{bundle} is not a folder")
    manifest = verify_bundle(bundle)
    unknown = sorted(set(variant or []) - set(manifest["variants"]))
    if unknown:
        raise InputError(f"{bundle} has no variant(s) {unknown}; it has {sorted(manifest['variants'])}")
    parity = {} if provider is None else check_provider_parity(
        bundle, provider, variant or list(manifest["variants"]), min_cosine=min_cosine)
    failed = [name for name, result in parity.items() if not result.passed]
    if json_out:
        print_json({"bundle": str(bundle), "intact": True, "files": len(manifest["files"]),
                    **({"provider": provider, "provider_parity": parity_report(parity)} if provider else {})})
    else:
        typer.echo(f"{bundle}: intact ({len(manifest['files'])} files match the manifest)")
        for name, result in parity.items():
            typer.echo(f"  {name} on {provider}: min cosine to the CPU {result.min_cosine:.6f} over "
                       f"{result.captions} captions ({'ok' if result.passed else f'below {min_cosine}'})")
    if failed:
        raise Refused(f"{bundle}: {', '.join(failed)} on {provider} differ from the CPU beyond --min-cosine "
                      f"{min_cosine}")


def shadow_command(
    champion: Annotated[Path, typer.Option("--champion", help="Bundle now serving.")],
    challenger: Annotated[Path, typer.Option("--challenger", help="Candidate bundle.")],
    queries: Annotated[Path, typer.Option("--queries", help="Text file, one query per line.")],
    index: Annotated[
        Path,
        typer.Option(
            "--index", help="Image embeddings .npy [N, dim]; ids in <index>.ids.txt or .ids.json, or --ids."
        ),
    ],
    ids: Annotated[Path | None, typer.Option("--ids", help="Ids file for the index rows.")] = None,
    k: Annotated[int, typer.Option("--k", help="Top-k to compare.")] = 10,
    report_path: Annotated[
        Path | None, typer.Option("--report", help="Also write the JSON report here.")
    ] = None,
) -> None:
    """Top-k overlap, rank changes and latency of challenger vs champion; prints a JSON report."""
    from toolkit.export.rollout import read_queries, shadow_report, write_report

    if k < 1:
        raise typer.BadParameter(f"{k} is not a positive number of results", param_hint="--k")
    report = shadow_report(champion, challenger, read_queries(queries), index, k=k, ids_path=ids)
    if not report["same_base_weights"]:
        console.print("[yellow]warning:[/] champion and challenger come from different base weights: the "
                      "index suits both only if their image towers are identical")
    if report_path is not None:
        write_report(report, report_path)
    print_json(report)
