"""The bundle for clients that are not our runtime: standard tokenizer files, the input guard, conformance
vectors, the transformers.js layout, and real Node clients (onnxruntime-node, transformers.js)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import REPO, TINY_OPEN_CLIP_CONFIG, run_toolkit
from toolkit.runtime.encoder import TextEncoder
from toolkit.runtime.manifest import BundleError, verify_bundle

NODE_PROJECT = REPO / "examples" / "node"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from toolkit.adapters.open_clip_adapter import OpenClipAdapter
    from toolkit.export.bundle import export_bundle

    root = tmp_path_factory.mktemp("foreign")
    config = root / "tiny-clip.json"
    config.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG), encoding="utf-8")
    torch.manual_seed(0)
    adapter = OpenClipAdapter.create(str(config), None)
    export_bundle(adapter, root / "bundle", ["fp32", "int8"], layout="hf")
    return root / "bundle"


def _conformance(bundle: Path) -> list[dict]:  # type: ignore[type-arg]
    from toolkit.export.conformance import read_conformance

    return read_conformance(bundle / "conformance.jsonl")


def test_tokenizer_json_reproduces_the_runtime_ids(bundle: Path) -> None:
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    runtime = TextEncoder(bundle).tokenizer
    cases = _conformance(bundle)
    for case in cases:
        assert case["ids"] == runtime.ids(case["text"]), case["name"]
        text = case["cleaned"] if case["client"] == "cleaning" else case["text"]
        if case["client"] != "ftfy":
            assert hf.encode(text).ids == case["ids"], case["name"]
    clients = {case["name"]: case["client"] for case in cases}
    # HF's own cleaning would get quotes, ligatures and full width wrong; ours reproduces them in tokenizer.json.
    assert {clients[n] for n in ("plain", "curly_quotes", "ligatures", "full_width", "long", "emoji")} == {"standard"}
    assert clients["html_entities"] == "cleaning" and clients["mojibake"] == "ftfy"
    manifest = verify_bundle(bundle)
    assert manifest["client_contract"]["ftfy_only"] == [n for n, c in clients.items() if c == "ftfy"]
    config = json.loads((bundle / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["model_max_length"] == manifest["context_length"]


def test_padding_mask_and_overlong_input_give_the_exact_length_embedding(bundle: Path) -> None:
    import onnxruntime as ort

    manifest = verify_bundle(bundle)
    context, eot = manifest["context_length"], manifest["eot_id"]
    encoder = TextEncoder(bundle)
    cases = {case["name"]: case for case in _conformance(bundle)}
    for variant in ("fp32", "int8"):
        session = ort.InferenceSession(str(bundle / manifest["variants"][variant]["file"]))
        for name in ("plain", "emoji", "long"):
            ids = np.asarray([cases[name]["ids"]], dtype=np.int64)
            (exact,) = session.run(None, {"input_ids": ids})
            padded = np.zeros((1, 77), dtype=np.int64)
            padded[0, : ids.shape[1]] = ids
            mask = (np.arange(77) < ids.shape[1]).astype(np.int64)[None]
            (via_pad,) = session.run(None, {"input_ids": padded, "attention_mask": mask})
            np.testing.assert_allclose(via_pad, exact, atol=1e-5, err_msg=f"{variant} {name}")
        # Over the context: all tokens with <eot> at the end, or cut after the specials without <eot>.
        tokens = encoder.tokenizer.encode(cases["long"]["text"])
        assert len(tokens) + 2 > context
        (truncated,) = session.run(None, {"input_ids": np.asarray([cases["long"]["ids"]], dtype=np.int64)})
        for row in ([encoder.tokenizer.sot_id, *tokens, eot], [encoder.tokenizer.sot_id, *tokens][:77]):
            (got,) = session.run(None, {"input_ids": np.asarray([row], dtype=np.int64)})
            np.testing.assert_allclose(got, truncated, atol=1e-5, err_msg=variant)
    fp32 = np.asarray([case["embedding"] for case in cases.values()], dtype=np.float32)
    np.testing.assert_allclose(encoder.encode([case["text"] for case in cases.values()]), fp32, atol=1e-6)


def test_manifest_lists_domains_and_the_hf_layout_and_verify_covers_them(bundle: Path, tmp_path: Path) -> None:
    manifest = verify_bundle(bundle)
    assert manifest["layout"] == "hf"
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "conformance.jsonl",
                 "config.json", "onnx/text_model.onnx", "onnx/text_model_quantized.onnx"):
        assert name in manifest["files"], name
    assert "com.microsoft" in manifest["variants"]["fp32"]["domains"]
    for name in ("tokenizer.json", "config.json", "onnx/text_model.onnx", "conformance.jsonl"):
        copy = tmp_path / name.replace("/", "_")
        shutil.copytree(bundle, copy)
        with (copy / name).open("ab") as handle:
            handle.write(b" ")
        with pytest.raises(BundleError, match=name):
            verify_bundle(copy)


def _node(script: str, bundle: Path) -> str:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (NODE_PROJECT / "node_modules").is_dir():
        pytest.fail(f"run `ONNXRUNTIME_NODE_INSTALL=skip npm ci` in {NODE_PROJECT} first (.ci/run does)")
    done = subprocess.run(["node", script, str(bundle)], cwd=NODE_PROJECT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_node_onnxruntime_and_tokenizers_reproduce_ids_and_embeddings(bundle: Path) -> None:
    out = _node("check_bundle.mjs", bundle)
    assert " 0 failed" in out and "ftfy-only (not compared): mojibake" in out, out


def test_transformers_js_loads_the_hf_layout_offline(bundle: Path) -> None:
    out = _node("check_transformers.mjs", bundle)
    assert " 0 failed" in out, out


def test_export_cli_layout_hf(tiny_config_path: Path, tmp_path: Path) -> None:

    spec = f"open_clip:{tiny_config_path}"
    bad = run_toolkit(["export", "--model", spec, "--out", str(tmp_path / "x"), "--layout", "onnx",
                       "--allow-random-init", "--no-track"])
    assert bad.exit_code == 3 and "unknown bundle layout 'onnx'" in bad.output
    ok = run_toolkit(["export", "--model", spec, "--out", str(tmp_path / "b"), "--layout", "hf",
                      "--allow-random-init", "--no-track"])
    assert ok.exit_code == 0, ok.output
    manifest = verify_bundle(tmp_path / "b")
    assert manifest["hf_layout"] == ["config.json", "onnx/text_model.onnx"]
    assert json.loads((tmp_path / "b" / "config.json").read_text())["model_type"] == "clip"
