"""`toolkit negatives audit`: a customer's check of their own captions' hard negatives, on a real catalog."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, ingest_captions, sugarcrepe_captions

SUGARCREPE_CAPTIONS = sugarcrepe_captions()



def _toolkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toolkit", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)


def test_audit_reports_every_generator_on_the_catalog(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    ingest_captions(url, tmp_path, SUGARCREPE_CAPTIONS)
    assert _toolkit("data", "snapshot", "--db", url).returncode == 0
    result = _toolkit("negatives", "audit", "--db", url, "--n", "60", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = {row["generator"]: row for row in report["generators"]}
    assert set(rows) == {"swap_across", "swap_within", "replace", "swap_relation", "swap_attribute"}
    assert report["pairs"] >= 40
    for name, row in rows.items():
        assert row["flag_sum"] == 0, row
        assert row["examples"] and row["classes"], name
    assert min(rows[n]["coverage"] for n in ("swap_across", "swap_within", "replace")) >= 0.95

    table = _toolkit("negatives", "audit", "--db", url, "--n", "20", "--generator", "swap_relation")
    assert table.returncode == 0 and "swap_relation: " in table.stdout and "→" in table.stdout
    unknown = _toolkit("negatives", "audit", "--db", url, "--generator", "swap_everything")
    assert unknown.returncode == 2 and "swap_relation" in unknown.stderr + unknown.stdout
