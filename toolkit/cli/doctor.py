"""`toolkit doctor`: what is installed, which features can run here, and the fix for each one that cannot."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from toolkit.cli.common import JsonOption, console, print_json
from toolkit.core.errors import EXIT_BAD_INPUT


def doctor(
    feature: Annotated[list[str] | None, typer.Option(
        "--feature", help="Check only these features (repeatable), e.g. --feature gpu-serving. Default: every "
                          "feature that does not need special hardware.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Print component versions and check every feature; exit 3 with the fix when one cannot run."""
    from toolkit.core.components import FEATURES, diagnose

    unknown = sorted(set(feature or []) - set(FEATURES))
    if unknown:
        raise typer.BadParameter(f"unknown feature(s) {', '.join(unknown)}; choose from {', '.join(FEATURES)}",
                                 param_hint="--feature")
    report = diagnose()
    failed = report.failed(feature or [])
    if json_output:
        print_json({"python": report.python, "versions": report.versions, "warnings": report.warnings,
                    "features": {s.feature.name: {"usable": s.usable, "problem": s.problem, "fix": s.fix}
                                 for s in report.statuses},
                    "failed": [s.feature.name for s in failed]})
    else:
        versions = Table(title=f"components (Python {report.python})")
        versions.add_column("component")
        versions.add_column("version")
        for name, version in report.versions.items():
            versions.add_row(name, escape(version) if version else "[dim]not installed[/]")
        console.print(versions)
        features = Table(title="features")
        for column in ("feature", "status", "what it is", "problem / fix"):
            features.add_column(column)
        for status in report.statuses:
            state = "[green]usable[/]" if status.usable else (
                "[yellow]no hardware[/]" if status.feature.hardware and status not in failed else "[red]unusable[/]")
            detail = "" if status.usable else escape(f"{status.problem}; fix: {status.fix}")
            features.add_row(status.feature.name, state, escape(status.feature.purpose), detail)
        console.print(features)
        for warning in report.warnings:
            console.print(f"[yellow]warning:[/] {escape(warning)}")
        if failed:
            console.print(f"[bold red]unusable:[/] {', '.join(s.feature.name for s in failed)}")
        else:
            console.print("every checked feature is usable")
    if failed:
        raise typer.Exit(EXIT_BAD_INPUT)


def register(app: typer.Typer) -> None:
    app.command(name="doctor")(doctor)
