"""Numbers past what a catalog id can hold: "no such item", never a driver overflow."""

from __future__ import annotations

from tests.helpers import run_toolkit


def test_a_review_id_above_2_63_names_no_item(tmp_path) -> None:
    """On main: `OverflowError: Python int too large to convert to SQLite INTEGER` (exit 1, traceback)."""
    db = f"sqlite:///{tmp_path / 'c.db'}"
    result = run_toolkit(["review", "record", str(2**64), "ambiguous", "--db", db])
    assert result.exit_code == 3, result.exc_info
    assert f"review item {2**64} does not exist" in result.output


def test_a_list_limit_above_2_63_lists_everything(tmp_path) -> None:
    """On main: `OverflowError: Python int too large to convert to SQLite INTEGER` (exit 1, traceback)."""
    result = run_toolkit(["review", "list", "--limit", str(2**64), "--json", "--db", f"sqlite:///{tmp_path / 'c.db'}"])
    assert result.exit_code == 0, result.exc_info
    assert result.output.strip() == "[]"
