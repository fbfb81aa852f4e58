"""Configuration faults in the catalog URL: one line and exit 3, never a traceback."""

from __future__ import annotations

from tests.helpers import run_toolkit


def test_a_port_that_is_not_a_number_is_bad_input() -> None:
    """On main: `ValueError: invalid literal for int() with base 10: 'notaport'` (exit 1, traceback)."""
    result = run_toolkit(["data", "stats", "--db", "postgresql+psycopg://alice:S3cretPW@127.0.0.1:notaport/catalog"])
    assert result.exit_code == 3, result.exc_info
    assert "not a database URL" in result.output and "S3cretPW" not in result.output
