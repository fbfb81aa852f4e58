"""A damaged catalog file (pages overwritten mid-file, or not SQLite at all) is one clear line and exit 3 that
names the catalog and what to do, from every command; any other database error stays a bug (a traceback)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tests.helpers import build_bad_row_corpus, run_toolkit
from toolkit.catalog import open_store
from toolkit.catalog.db import CatalogDamagedError


def _ingested_catalog(tmp_path: Path) -> tuple[Path, str]:
    corpus = build_bad_row_corpus(tmp_path)
    path = tmp_path / "catalog.db"
    url = f"sqlite:///{path}"
    result = run_toolkit(["ingest", corpus.manifest, "--images-root", corpus.root, "--db", url])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(path) as connection:  # everything in the main file, nothing left in the WAL
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path, url


def _flip(path: Path, offset: int, count: int = 200) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _assert_one_clear_line(result, path: Path) -> None:
    assert result.exit_code == 3, (result.exit_code, result.output, result.exc_info)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    assert str(path) in lines[0] and "backup" in lines[0] and "integrity_check" in lines[0], lines[0]


def _page_nearest_the_middle(path: Path, table: str) -> int:
    """Byte offset of the page of `table` nearest the file's middle (a flip there is one a read meets)."""
    with sqlite3.connect(path) as connection:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        pages = [p for (p,) in connection.execute("SELECT pageno FROM dbstat WHERE name = ?", (table,))]
    middle = path.stat().st_size // 2
    return min(((p - 1) * page_size for p in pages), key=lambda offset: abs(offset - middle))


def test_pages_flipped_mid_file_are_one_line_and_exit_3(tmp_path):
    path, url = _ingested_catalog(tmp_path)
    _flip(path, _page_nearest_the_middle(path, "captions"))  # 200 bytes from the page header on
    for command in (["data", "stats", "--db", url], ["data", "snapshot", "--db", url]):
        _assert_one_clear_line(run_toolkit(command, catch_exceptions=True), path)


def test_a_file_that_is_not_a_database_is_one_line_and_exit_3(tmp_path):
    path, url = _ingested_catalog(tmp_path)
    _flip(path, 0, 100)  # the header: SQLite no longer recognises the file
    for command in (["data", "stats", "--db", url], ["data", "snapshot", "--db", url]):
        _assert_one_clear_line(run_toolkit(command, catch_exceptions=True), path)


def test_other_database_errors_stay_bugs(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'catalog.db'}")
    with pytest.raises(OperationalError), store.session() as session:
        session.execute(text("SELECT * FROM no_such_table"))
    assert not issubclass(OperationalError, CatalogDamagedError)
    store.close()
