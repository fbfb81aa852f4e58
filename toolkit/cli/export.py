"""`toolkit export`, `toolkit verify`, `toolkit rollout shadow`: thin shells over toolkit.export.*."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_REFUSED,
    DbOption,
    JsonOption,
    console,
    errors_to_exit,
    fail,
    print_json,
)


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
    from toolkit.adapters.base import ModelLoadError
    from toolkit.adapters.loading import load_model, parse_model_spec, read_model_card
    from toolkit.benchmarks import BenchmarkError
    from toolkit.export.bundle import ParityError, Provenance, check_bundle_destination, export_bundle, file_sha256
    from toolkit.export.manifest import BundleError
    from toolkit.export.onnx_text import ExportError
    from toolkit.export.optimize import parse_variants
    from toolkit.outputs import weights_sha256

    try:
        chosen = parse_variants(variants)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--variants") from err
    with errors_to_exit(
        {
            ValueError: EXIT_BAD_INPUT,
            ModelLoadError: EXIT_BAD_INPUT,
            ExportError: EXIT_BAD_INPUT,
            BenchmarkError: EXIT_BAD_INPUT,
            ParityError: EXIT_REFUSED,
            BundleError: EXIT_REFUSED,
            OSError: EXIT_BAD_INPUT,
        }
    ):
        check_bundle_destination(out)  # before the model loads: a bad --out costs nothing
        metrics = _read_metrics(eval_metrics) if eval_metrics else {}
        extra_captions = _read_lines(parity_captions) if parity_captions else []
        spec = parse_model_spec(model)
        card = read_model_card(Path(spec.target)) if spec.family == "run" else {}
        adapter = load_model(model, allow_random_init=allow_random_init)
        plan = _approval_plan(approve_on or [], approve_tolerance, images, db, approve_device)
        provenance = Provenance(
            source_run=source_run or card.get("mlflow_run_id"),
            base_weights_sha256=file_sha256(base_weights) or card.get("base_weights_sha256"),
            weights_sha256=weights_sha256(model),
            eval_metrics=metrics,
        )
        params = {"model": model, "variants": ",".join(chosen), "with_image": with_image,
                  "approve_on": approve_on or [], "approve_tolerance": approve_tolerance}

        def run_export() -> dict[str, Any]:
            with console.status(f"exporting {model} ({', '.join(chosen)}) and checking parity"):
                return export_bundle(
                    adapter, out, chosen, provenance, with_image=with_image, parity_captions=extra_captions,
                    approval=plan,
                )

        manifest, run_id = _tracked_export(run_export, provenance, params, out) if track else (run_export(), None)
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


def _approval_plan(specs: list[str], tolerance: float, images: Path | None, db: str | None,
                   device: str) -> Any:
    from toolkit.benchmarks import load_benchmark, parse_benchmark_spec
    from toolkit.distributed import resolve_device
    from toolkit.evaluate import EvalConfig
    from toolkit.export.approval import ApprovalPlan

    if not specs:
        if device != "cpu":
            raise ValueError(f"--approve-device {device} needs --approve-on: it is where approval scores run")
        return None
    resolve_device(device)  # refused before the benchmarks load and the export runs
    loaded = []
    for text in specs:
        with console.status(f"loading {text}"):
            loaded.append(load_benchmark(parse_benchmark_spec(text), images, db))
    return ApprovalPlan(tuple(loaded), tuple(specs), tolerance, EvalConfig(device=device))


def _tracked_export(run_export: Callable[[], dict[str, Any]], provenance: Any, params: dict[str, Any],
                    out: Path) -> tuple[dict[str, Any], str]:
    """Run the export inside an MLflow run (kind=export, parent = the training run) and log the bundle.

    A failed export (parity, approval input) leaves the run FAILED, so refusals are on record too.
    """
    from toolkit.export.bundle import log_bundle_to_mlflow
    from toolkit.export.manifest import MANIFEST, sha256_file
    from toolkit.governance.tracking import Lineage, tracked_run

    lineage = Lineage(kind="export", parent_run=provenance.source_run,
                      base_weights_sha256=provenance.base_weights_sha256)
    with tracked_run(lineage, params, run_name=f"export {out.name}") as run:
        manifest = run_export()
        run.log_params({"opset": manifest["opset"], "weights_sha256": manifest["weights_sha256"]})
        log_bundle_to_mlflow(out)
        run.set_tags({"toolkit.bundle_manifest_sha256": sha256_file(out / MANIFEST)})
    return manifest, run.run_id


def _read_lines(path: Path) -> list[str]:
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"--parity-captions {path} is not a readable UTF-8 text file: {err}") from err
    if not lines:
        raise ValueError(f"--parity-captions {path} has no captions (expected one per line)")
    return lines


def _read_metrics(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"--eval-metrics {path} is not a readable UTF-8 JSON file: {err}") from err
    if not isinstance(data, dict) or not all(isinstance(v, int | float) for v in data.values()):
        raise ValueError(f"--eval-metrics {path} must be a JSON object of name -> number")
    return {str(k): float(v) for k, v in data.items()}


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
    from toolkit.export.manifest import BundleError, verify_bundle
    from toolkit.export.parity import check_provider_parity, parity_report
    from toolkit.runtime import ProviderError

    if not -1.0 <= min_cosine <= 1.0:  # NaN too: a cosine bound outside [-1, 1] passes or fails everything
        raise typer.BadParameter(f"{min_cosine} is not a cosine in [-1, 1]", param_hint="--min-cosine")
    if not bundle.is_dir():
        fail(f"{bundle} is not a folder")
    with errors_to_exit({BundleError: EXIT_REFUSED, ProviderError: EXIT_BAD_INPUT}):
        manifest = verify_bundle(bundle)
        unknown = sorted(set(variant or []) - set(manifest["variants"]))
        if unknown:
            fail(f"{bundle} has no variant(s) {unknown}; it has {sorted(manifest['variants'])}")
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
        fail(f"{bundle}: {', '.join(failed)} on {provider} differ from the CPU beyond --min-cosine {min_cosine}",
             EXIT_REFUSED)


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
    from toolkit.export.manifest import BundleError
    from toolkit.export.rollout import read_queries, shadow_report

    if k < 1:
        raise typer.BadParameter(f"{k} is not a positive number of results", param_hint="--k")
    with errors_to_exit({BundleError: EXIT_REFUSED, ValueError: EXIT_BAD_INPUT, OSError: EXIT_BAD_INPUT}):
        report = shadow_report(champion, challenger, read_queries(queries), index, k=k, ids_path=ids)
        if not report["same_base_weights"]:
            console.print("[yellow]warning:[/] champion and challenger come from different base weights: the "
                          "index suits both only if their image towers are identical")
        if report_path is not None:
            report_path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print_json(report)
