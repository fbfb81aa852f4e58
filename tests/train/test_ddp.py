"""torchrun with 2 CPU processes (gloo) gives the same model as one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.helpers import REPO, TINY_TRAIN_SCRIPT
from toolkit.adapters.loading import load_model

SCRIPT = str(TINY_TRAIN_SCRIPT)


def _run(command: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


def test_two_process_ddp_matches_single_process(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    common = ["--spec", tiny_open_clip_spec, "--batch-size", "4", "--max-steps", "4", "--samples", "16"]
    _run([sys.executable, SCRIPT, "--out", str(tmp_path / "single"), *common])
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", SCRIPT,
          "--out", str(tmp_path / "ddp"), *common])

    base = load_model(tiny_open_clip_spec).model.state_dict()
    single = load_model(str(tmp_path / "single")).model.state_dict()
    ddp = load_model(str(tmp_path / "ddp")).model.state_dict()
    moved = 0
    for name, expected in single.items():
        if name.startswith("visual."):
            assert torch.equal(ddp[name], base[name]), name  # frozen on every rank
        actual = ddp[name]
        if name.endswith("attn.in_proj_bias"):
            # The key bias shifts every logit of a softmax row equally, so its true gradient is zero and
            # Adam turns float round-off there into ±lr steps. Compare the query and value biases only.
            width = expected.shape[0] // 3
            expected = torch.cat([expected[:width], expected[2 * width:]])
            actual = torch.cat([actual[:width], actual[2 * width:]])
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5, msg=name)
        moved += int(not torch.equal(expected, base[name]))
    assert moved > 10  # training did change the text tower, so the comparison means something


def test_devices_are_refused_by_name_before_any_work() -> None:
    import pytest

    from toolkit.adapters.devices import DeviceError, resolve_device
    from toolkit.train.distributed import init_distributed

    assert resolve_device("cpu") == torch.device("cpu") == init_distributed("cpu")
    with pytest.raises(DeviceError, match="'gpu0' is not a torch device"):
        resolve_device("gpu0")
    if torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(DeviceError, match="sees no CUDA device"):
            init_distributed("cuda")  # what `toolkit train --device cuda` reaches first
