"""The one error root. Every failure a user can act on is a `ToolkitError`; anything else is a bug.

`toolkit.cli.main()` is the only place that turns these into a message and an exit code: a
`ToolkitError` prints one line and exits with its `exit_code`; any other exception exits 1 with its
traceback, so an internal bug never reads as a user mistake.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BUG = 1  # an unexpected internal error: a traceback follows
EXIT_USAGE = 2  # bad options (Typer's own code too)
EXIT_BAD_INPUT = 3  # a file, model, snapshot, URL or server is missing, corrupt or wrong; a component is absent
EXIT_STRICT = 4  # --strict ingest refused a batch with rejects
EXIT_REFUSED = 5  # a gate, check or verification refused (promotion, parity, bundle integrity)


class ToolkitError(Exception):
    """A failure the user can act on. Subclass one of the kinds below, never this class directly."""

    exit_code: int = EXIT_BAD_INPUT


class UsageError(ToolkitError):
    """An option value that cannot work (exit 2)."""

    exit_code = EXIT_USAGE


class InputError(ToolkitError):
    """Bad or missing input: a file, model, snapshot, configuration, database or server (exit 3)."""

    exit_code = EXIT_BAD_INPUT


class MissingComponentError(InputError):
    """An optional package a feature needs is not installed (exit 3); the message holds the fix."""


class StrictRefusal(ToolkitError):
    """`--strict` refused work because some rows were rejected (exit 4)."""

    exit_code = EXIT_STRICT


class Refused(ToolkitError):
    """A gate, check or verification said no (exit 5): promotion, parity, bundle integrity."""

    exit_code = EXIT_REFUSED
