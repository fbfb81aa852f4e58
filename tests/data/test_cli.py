"""The CLI contract of `toolkit ingest` and `toolkit data`: JSON keys and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, build_bad_row_corpus, run_toolkit, write_png


def toolkit(*args: str, workspace: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "TOOLKIT_WORKSPACE": str(workspace)}
    environment.pop("TOOLKIT_DB_URL", None)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "toolkit", *args], env=environment, capture_output=True,
                          text=True, timeout=300)


def test_ingest_json_contract_and_stats(tmp_path):
    corpus = build_bad_row_corpus(tmp_path)
    done = toolkit("ingest", str(corpus.manifest), "--images-root", str(corpus.root), "--json",
                   workspace=tmp_path / "ws")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for key in ("rows_read", "images_added", "captions_added", "duplicates", "rejected", "rejects"):
        assert key in report
    assert report["rejected"] == len(report["rejects"]) == len(corpus.expected_rejects)
    assert {"row", "reason"} <= set(report["rejects"][0])

    stats = json.loads(toolkit("data", "stats", "--json", workspace=tmp_path / "ws").stdout)
    assert stats["images"] == corpus.valid_images
    assert stats["captions"] == corpus.valid_captions
    assert stats["rejects"] == len(corpus.expected_rejects)
    assert sum(stats["splits"].values()) == corpus.valid_images
    assert stats["rejects_by_reason"]["image_path_traversal"] == 1

    first = toolkit("data", "snapshot", "--json", workspace=tmp_path / "ws")
    again = toolkit("data", "snapshot", "--json", workspace=tmp_path / "ws")
    one, two = json.loads(first.stdout), json.loads(again.stdout)
    assert one["created"] and not two["created"] and one["id"] == two["id"]
    assert one["members"] == corpus.valid_captions


def test_db_url_from_environment(tmp_path):
    write_png(tmp_path / "a.png", (40, 30), (1, 2, 3))
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "a.png", "caption": "A cup."}))
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    done = toolkit("ingest", str(tmp_path / "m.jsonl"), "--json", workspace=tmp_path / "ws",
                   env={"TOOLKIT_DB_URL": url})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "elsewhere.db").exists() and not (tmp_path / "ws" / "catalog.db").exists()


def test_exit_codes(tmp_path):
    corpus = build_bad_row_corpus(tmp_path)
    strict = toolkit("ingest", str(corpus.manifest), "--images-root", str(corpus.root), "--strict", "--json",
                     workspace=tmp_path / "ws")
    assert strict.returncode == 4
    assert json.loads(strict.stdout)["status"] == "refused"
    missing = toolkit("ingest", str(tmp_path / "nope.jsonl"), workspace=tmp_path / "ws")
    assert missing.returncode == 3 and "does not exist" in missing.stderr
    bad_db = toolkit("data", "stats", "--db", "notaurl", workspace=tmp_path / "ws")
    assert bad_db.returncode == 3 and "not a database URL" in bad_db.stderr
    no_snapshot = toolkit("data", "snapshot", workspace=tmp_path / "empty")
    assert no_snapshot.returncode == 3 and "toolkit ingest" in no_snapshot.stderr
    # Paths and key lists in [brackets] reach the user whole (rich would read them as markup and drop them).
    bracketed = toolkit("ingest", str(tmp_path / "release[v2]" / "rows.jsonl"), workspace=tmp_path / "ws")
    assert bracketed.returncode == 3 and "release[v2]" in bracketed.stderr.replace("\n", "")


def test_text_from_the_input_is_printed_as_text_not_markup(tmp_path):
    write_png(tmp_path / "imgs" / "red.png", (40, 30), (1, 2, 3))
    (tmp_path / "m.csv").write_text("image,caption\nimgs/red.png,A red square.\nimgs/red.png,[/]\n"
                                    "imgs/[draft]/a.png,A draft.\n", encoding="utf-8")
    done = toolkit("ingest", str(tmp_path / "m.csv"), workspace=tmp_path / "ws", env={"COLUMNS": "300"})
    assert done.returncode == 0, done.stderr
    assert "'[/]'" in done.stderr and "imgs/[draft]/a.png" in done.stderr
    folder = tmp_path / "folder"
    write_png(folder / "[x].png", (40, 30), (1, 2, 3))
    refused = toolkit("ingest", str(folder), "--strict", workspace=tmp_path / "ws2", env={"COLUMNS": "300"})
    assert refused.returncode == 4 and "[x].png" in refused.stderr


def test_impossible_numeric_options_are_bad_options(tmp_path, monkeypatch):


    monkeypatch.setenv("TOOLKIT_WORKSPACE", str(tmp_path / "ws"))
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "a.png", "caption": "A cup."}))
    for option, value in (("--commit-every", "0"), ("--commit-every", "-1"), ("--max-caption-chars", "-5"),
                          ("--split-ratios", "nan,0,1"), ("--on-long-caption", "chop")):
        result = run_toolkit(["ingest", str(tmp_path / "m.jsonl"), option, value])
        assert result.exit_code == 2, (option, value, result.output)
    assert not (tmp_path / "ws" / "catalog.db").exists()


def test_stats_on_a_damaged_catalog_names_the_damage(tmp_path):
    import sqlite3

    write_png(tmp_path / "a.png", (40, 30), (1, 2, 3))
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "a.png", "caption": "A cup."}))
    assert toolkit("ingest", str(tmp_path / "m.jsonl"), workspace=tmp_path / "ws").returncode == 0
    with sqlite3.connect(tmp_path / "ws" / "catalog.db") as connection:
        connection.execute("UPDATE sentences SET pos = 'notjson'")
    damaged = toolkit("data", "stats", workspace=tmp_path / "ws")
    assert damaged.returncode == 3 and "Traceback" not in damaged.stderr
    assert "sentences" in damaged.stderr and "pos" in damaged.stderr
