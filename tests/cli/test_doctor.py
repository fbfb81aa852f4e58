"""`toolkit doctor` and missing optional components: named, with the fix, exit 3, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from toolkit.core.components import FEATURES, check_feature, require
from toolkit.core.errors import EXIT_BAD_INPUT, MissingComponentError


def _run_cli(args: list[str], hidden_module: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `main()` in a fresh interpreter; `hidden_module` cannot be imported there."""
    hide = f"sys.modules[{hidden_module!r}] = None" if hidden_module else ""
    code = textwrap.dedent(f"""
        import sys
        {hide}
        from toolkit.cli import main
        sys.argv = ["toolkit", *{args!r}]
        main()
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_doctor_reports_every_feature_usable_on_the_readme_install() -> None:
    result = _run_cli(["doctor", "--json"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["failed"] == []
    for name, feature in FEATURES.items():
        if not feature.hardware:
            assert report["features"][name]["usable"], (name, report["features"][name])
    assert report["versions"]["onnxscript"] and report["versions"]["torch"]


def test_doctor_names_export_unusable_without_onnxscript_with_the_fix() -> None:
    result = _run_cli(["doctor", "--json"], hidden_module="onnxscript")
    assert result.returncode == EXIT_BAD_INPUT
    report = json.loads(result.stdout)
    assert report["failed"] == ["export"]
    assert "onnxscript" in report["features"]["export"]["problem"]
    assert "pip install" in report["features"]["export"]["fix"]


def test_export_without_onnxscript_is_one_line_and_exit_3(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from toolkit.demo.pretrain import ALT_TEXT_BASE  # a committed demo model: a real model to export

    result = _run_cli(["export", "--model", str(ALT_TEXT_BASE), "--out", str(tmp_path / "b"), "--variants", "fp32"],
                      hidden_module="onnxscript")
    assert result.returncode == EXIT_BAD_INPUT, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "onnxscript" in result.stderr and "pip install" in result.stderr
    assert not (tmp_path / "b").exists()


def test_require_raises_a_toolkit_error_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)
    assert not check_feature(FEATURES["lora"]).usable
    with pytest.raises(MissingComponentError, match=r"peft.*pip install 'clic-toolkit\[lora\]'"):
        require("lora")


def test_gpu_features_are_reported_but_not_required_by_default() -> None:
    result = _run_cli(["doctor", "--json"])
    report = json.loads(result.stdout)
    assert {"gpu-train", "gpu-serving"} <= set(report["features"])
    if not report["features"]["gpu-train"]["usable"]:
        asked = _run_cli(["doctor", "--json", "--feature", "gpu-train"])
        assert asked.returncode == EXIT_BAD_INPUT
        assert json.loads(asked.stdout)["failed"] == ["gpu-train"]
