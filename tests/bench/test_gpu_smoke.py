"""`bench/bench_gpu.py --smoke` runs on CPU in CI, so the prepared GPU benchmark cannot rot unseen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def test_gpu_bench_smoke_runs_every_part_and_saves_them(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "bench" / "bench_gpu.py"), "--smoke", "--workers", "1",
                           "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads((tmp_path / "gpu-cpu-smoke.json").read_text())
    assert result["smoke"] and {"prepare", "data_path", "step_time", "seconds"} <= result.keys()
    assert [run["model"] for run in result["end_to_end"]] == ["smoke"]
    assert result["end_to_end"][0]["samples_per_s"] > 0
