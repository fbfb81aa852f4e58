"""Ten commands started together on a new catalog all succeed: the first creates the schema, the others
wait for it (a file lock on SQLite, an advisory lock on PostgreSQL) and find it at head.

Each process waits for a shared "go" file after importing, so all ten open the catalog within milliseconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.helpers import REPO

FIRST_USE = """
import sys, time
from pathlib import Path
from toolkit.catalog import open_store
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
store = open_store(sys.argv[1])
store.audit("test.first_use", sys.argv[3], {})
print("ok")
"""


def test_ten_concurrent_first_uses_of_a_new_catalog_all_succeed(catalog_url, tmp_path):
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, "-c", FIRST_USE, catalog_url, str(go), str(i)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(10)]
    time.sleep(8)  # let every process finish importing and reach the go line
    go.touch()
    outcomes = [(p.wait(timeout=300), *p.communicate()) for p in processes]
    failed = [err[-1500:] for code, _, err in outcomes if code != 0]
    assert not failed, f"{len(failed)} of 10 failed; the first:\n{failed[0]}"

    from sqlalchemy import select

    from toolkit.catalog import open_store
    from toolkit.catalog.models import AuditEvent

    with open_store(catalog_url).session() as session:
        subjects = sorted(session.scalars(select(AuditEvent.subject).where(AuditEvent.action == "test.first_use")))
    assert subjects == sorted(str(i) for i in range(10))
