"""`pip install clic-toolkit` (core only) in a brand-new venv serves a bundle without torch, spaCy or MLflow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import REPO, TINY_OPEN_CLIP_CONFIG

CAPTIONS = ["a red cube left of a blue ball", "a blue cube left of a red ball", "“Curly” &amp; ﬁne"]


@pytest.mark.runtime_venv
def test_core_install_serves_a_bundle_without_torch_spacy_or_mlflow(tmp_path: Path) -> None:
    from toolkit.adapters.open_clip_adapter import OpenClipAdapter
    from toolkit.export.bundle import export_bundle
    from toolkit.runtime import TextEncoder

    config = tmp_path / "tiny-clip.json"
    config.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG), encoding="utf-8")
    torch.manual_seed(0)
    export_bundle(OpenClipAdapter.create(str(config), None), tmp_path / "bundle", ["fp32"])
    expected = TextEncoder(tmp_path / "bundle").encode(CAPTIONS)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # A plain (non-editable) install of a copy of this checkout (the build writes build/ beside the sources),
    # core dependencies only, from the package index.
    source = tmp_path / "src"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", ".venv*", "toolkit-workspace", "node_modules"))
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(source)], env=env, capture_output=True,
                             text=True, timeout=900)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    probe = textwrap.dedent(f"""
        import importlib.util, json, sys
        absent = [m for m in ("torch", "spacy", "mlflow", "sqlalchemy", "open_clip") if importlib.util.find_spec(m)]
        from toolkit.runtime import TextEncoder
        vectors = TextEncoder({str(tmp_path / "bundle")!r}).encode({CAPTIONS!r})
        print(json.dumps({{"installed_but_should_not_be": absent, "vectors": vectors.tolist(),
                          "loaded": sorted(m for m in ("torch", "spacy", "mlflow") if m in sys.modules)}}))
    """)
    result = subprocess.run([str(python), "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["installed_but_should_not_be"] == [] and report["loaded"] == []
    np.testing.assert_allclose(np.array(report["vectors"], dtype=np.float32), expected, atol=1e-6)

    verify = subprocess.run([str(venv / "bin" / "toolkit"), "verify", str(tmp_path / "bundle")], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-2000:]
    tampered = tmp_path / "bundle" / "manifest.json"
    tampered.write_text(tampered.read_text(encoding="utf-8") + " ", encoding="utf-8")
    refused = subprocess.run([str(venv / "bin" / "toolkit"), "verify", str(tmp_path / "bundle")], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 5 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
