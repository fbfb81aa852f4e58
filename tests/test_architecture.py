"""The pipeline's import contracts (pyproject.toml, import-linter) hold, and a forbidden import breaks them."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports over the `toolkit` package found first in `root`, with the repository's contracts."""
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def _copy_package(tmp_path: Path) -> Path:
    """A copy of the package with the top-level stage folders materialised where the symlinks point."""
    shutil.copytree(REPO / "toolkit", tmp_path / "toolkit", symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__", "base"))
    return tmp_path


def test_contracts_hold_on_the_repository(tmp_path: Path) -> None:
    result = _lint(_copy_package(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "forbidden", "contract"), [
    ("runtime/encoder.py", "import torch", "The runtime serves without torch"),
    ("runtime/encoder.py", "import toolkit.export.parity", "The runtime serves without torch"),
    ("train/job.py", "import toolkit.governance.review", "Pipeline layers"),
    ("data/samples.py", "import sqlalchemy", "pure"),
    ("eval/evaluate.py", "import toolkit.cli.common", "Nothing imports the shells"),
])
def test_a_forbidden_import_breaks_its_contract(tmp_path: Path, module: str, forbidden: str, contract: str) -> None:
    root = _copy_package(tmp_path)
    target = root / "toolkit" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{forbidden}  # injected by the test\n",
                      encoding="utf-8")
    result = _lint(root)
    assert result.returncode != 0, result.stdout[-3000:]
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken and module.replace("/", ".").removesuffix(".py") in broken


@pytest.mark.parametrize("name", ["adapters", "export", "governance"])
def test_top_level_stage_folders_import_only_as_toolkit_modules(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(ImportError, match=f"toolkit.{name}"):
        importlib.import_module(name)
    assert importlib.import_module(f"toolkit.{name}").__name__ == f"toolkit.{name}"
