"""`toolkit demo` verbs through Typer: output, and exit codes for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_toolkit
from toolkit.cli import demo as demo_cli
from toolkit.core.errors import EXIT_BAD_INPUT


def test_generate_writes_the_sets_and_refuses_a_used_folder(tmp_path: Path) -> None:
    args = ["demo", "generate", "--out", str(tmp_path / "d"), "--pretrain-images", "2",
            "--domain-images", "3", "--eval-images", "2", "--zeroshot-per-class", "1", "--json"]
    result = run_toolkit(args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert Path(payload["domain_manifest"]).read_text(encoding="utf-8").count("\n") == 3
    again = run_toolkit(args)
    assert again.exit_code == EXIT_BAD_INPUT
    assert "not empty" in " ".join(again.output.split())


def test_pretrain_on_a_missing_folder_says_what_to_run(tmp_path: Path) -> None:
    args = ["demo", "pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "m")]
    result = run_toolkit(args)
    assert result.exit_code == EXIT_BAD_INPUT
    assert "toolkit demo generate" in " ".join(result.output.split())


@pytest.mark.parametrize(("extra", "says"), [
    (["--recipe", "two-stage", "--data", "d"], "settings of --recipe alt-text"),  # it renders its own scenes
    (["--init", "m0", "--data", "d"], "--init is a setting of the two-stage recipe"),
    ([], "pass --data DIR"),
    (["--recipe", "alt_text"], "--recipe must be two-stage or alt-text"),
])
def test_pretrain_options_that_do_not_fit_the_recipe_are_refused(tmp_path: Path, extra: list[str],
                                                                  says: str) -> None:
    result = run_toolkit(["demo", "pretrain", "--out", str(tmp_path / "m"), *extra])
    assert result.exit_code == EXIT_BAD_INPUT
    assert says in " ".join(result.output.split())
    assert not (tmp_path / "m").exists()


def test_headline_table_keeps_quarter_points_and_marks_missing_errors() -> None:
    from rich.console import Console

    summary = {"base": {"zeroshot_top1": 73.0, "domain_acc": 58.7},
               "trained_unblended": {"zeroshot_top1": 68.75, "domain_acc": 81.7},
               "candidate": {"zeroshot_top1": 71.75, "domain_acc": 73.6},
               "delta": {"zeroshot_top1": -1.25, "domain_acc": 14.9},
               "delta_standard_error": {"zeroshot_top1": 1.34}}
    console = Console(width=200, record=True)
    console.print(demo_cli.headline_table(summary))
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in console.export_text().splitlines()]
    rows = {row[0]: row[1:] for row in cells if row}
    assert rows["zeroshot_top1"] == ["73.00", "68.75", "71.75", "-1.25", "1.34"]
    assert rows["domain_acc"] == ["58.70", "81.70", "73.60", "+14.90", "-"]
