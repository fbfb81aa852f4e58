"""open_clip text encoder -> ONNX bundle: parity per variant, trimming, tamper refusal, index
compatibility, shadow rollout, CLI and MLflow logging. One tiny bundle is exported per module."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import REPO, TINY_OPEN_CLIP_CONFIG, run_toolkit
from toolkit.export.parity import HELD_OUT_CAPTIONS
from toolkit.runtime.encoder import TextEncoder, trim_to_longest_eot
from toolkit.runtime.manifest import BundleError, verify_bundle


def _tiny_adapter(config_dir: Path, seed: int):  # type: ignore[no-untyped-def]
    from toolkit.adapters.open_clip_adapter import OpenClipAdapter

    path = config_dir / "tiny-clip.json"
    path.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG), encoding="utf-8")
    torch.manual_seed(seed)
    return OpenClipAdapter.create(str(path), None)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from toolkit.export.bundle import Provenance, export_bundle

    root = tmp_path_factory.mktemp("export")
    adapter = _tiny_adapter(root, seed=0)
    manifest = export_bundle(
        adapter,
        root / "bundle",
        ["fp32", "fp16", "int8"],
        Provenance(source_run="run-1", base_weights_sha256="ab" * 32, eval_metrics={"retrieval_r5": 12.5}),
        with_image=True,
    )
    return adapter, root / "bundle", manifest


def test_parity_every_variant(exported) -> None:  # type: ignore[no-untyped-def]
    _, _, manifest = exported
    parity = manifest["parity"]
    assert set(parity) == {"fp32", "fp16", "int8"}
    assert all(result["tokens_identical"] for result in parity.values())
    assert parity["fp32"]["min_cosine"] >= 0.9999 and parity["fp32"]["max_abs_diff"] < 1e-4
    assert parity["fp16"]["min_cosine"] >= 0.999
    assert parity["int8"]["min_cosine"] >= 0.99
    assert parity["fp32"]["captions"] >= 15


def test_manifest_records_what_the_runtime_needs(exported) -> None:  # type: ignore[no-untyped-def]
    _, _, manifest = exported
    assert manifest["embed_dim"] == 32 and manifest["context_length"] == 32
    assert manifest["tokenizer"]["context_length"] == 32 and manifest["eot_id"] == 49407
    assert manifest["opset"] == 18 and manifest["normalisation"] == "l2"
    assert manifest["pool"] == "argmax" and manifest["trim_to_eot"] is True  # causal mask present
    assert manifest["source_run"] == "run-1" and manifest["eval_metrics"] == {"retrieval_r5": 12.5}
    image = manifest["image_encoder"]
    assert image["size"] == 32 and len(image["mean"]) == 3 and image["parity"]["min_cosine"] >= 0.9999
    listed = set(manifest["files"])
    assert listed == {
        "image_encoder.fp32.onnx",
        "text_encoder.fp32.onnx",
        "text_encoder.fp16.onnx",
        "text_encoder.int8.onnx",
        "tokenizer/bpe_merges.txt.gz",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "conformance.jsonl",
    }


def test_runtime_matches_torch_on_long_and_odd_text(exported) -> None:  # type: ignore[no-untyped-def]
    adapter, bundle, _ = exported
    texts = ["a red cube left of a blue ball", "word " * 100, "!!!", "", "\u00e9t\u00e9 \U0001f436"]
    with torch.inference_mode():
        reference = adapter.encode_text(adapter.tokenize(texts)).numpy()
    got = TextEncoder(bundle).encode(texts)
    assert got.dtype == np.float32 and got.shape == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, reference, atol=1e-5)
    # batched by length then put back in order
    np.testing.assert_allclose(TextEncoder(bundle).encode(texts, batch_size=2), reference, atol=1e-5)


def test_trim_to_longest_eot_by_hand() -> None:
    ids = np.array([[5, 1, 9, 0, 0, 0], [5, 9, 0, 0, 0, 0]])
    assert trim_to_longest_eot(ids, eot_id=9).tolist() == [[5, 1, 9], [5, 9, 0]]
    padded_with_eot = np.array([[5, 9, 9, 9], [5, 1, 1, 9]])  # HF pads with <eot>: the first one counts
    assert trim_to_longest_eot(padded_with_eot, eot_id=9).shape == (2, 4)
    with pytest.raises(ValueError, match="<eot>"):
        trim_to_longest_eot(np.array([[5, 1, 0]]), eot_id=9)


# Not int8: dynamic quantisation scales activations per tensor over the whole batch, so its output
# depends on batch content (padding included) anyway; its parity is measured on the trimmed path.
@pytest.mark.parametrize("variant", ["fp32", "fp16"])
def test_trimmed_batch_equals_full_context(exported, variant: str) -> None:  # type: ignore[no-untyped-def]
    _, bundle, _ = exported
    trimmed = TextEncoder(bundle, variant, allow_unapproved=True)
    full = TextEncoder(bundle, variant, trim=False, allow_unapproved=True)
    texts = ["a cat", "a much longer caption about two dogs chasing a ball across a park", "x"]
    ids = trimmed.tokenize(texts)
    assert trim_to_longest_eot(ids, trimmed.eot_id).shape[1] < ids.shape[1]  # trimming does happen
    np.testing.assert_allclose(trimmed.encode_ids(ids), full.encode_ids(ids), atol=1e-6)


def test_runtime_refuses_variants_not_approved(exported) -> None:  # type: ignore[no-untyped-def]
    _, bundle, manifest = exported
    # exported without evaluation items: fp32 is approved by parity, reduced precision is not
    assert manifest["approval"] is None
    assert manifest["variants"]["fp32"]["approved"] is True
    assert manifest["variants"]["fp16"]["approved"] is False
    with pytest.raises(BundleError, match=r"'int8' is not approved \(not re-scored on evaluation items"):
        TextEncoder(bundle, "int8")
    assert not TextEncoder(bundle, "int8", allow_unapproved=True).approved
    assert TextEncoder(bundle).approved


def test_execution_providers_are_checked_before_and_after_the_session_starts(exported) -> None:  # type: ignore[no-untyped-def]
    from toolkit.runtime.encoder import CPU, ProviderError, check_providers, check_session_providers

    available = ["CPUExecutionProvider"]
    assert check_providers(["CPUExecutionProvider"], available) == ["CPUExecutionProvider"]
    with pytest.raises(ProviderError, match=r"\['CUDAExecutionProvider'\] are not in this onnxruntime build; "
                       r"available: \['CPUExecutionProvider'\] \(install onnxruntime-gpu"):
        check_providers(["CUDAExecutionProvider", "CPUExecutionProvider"], available)
    for bad in ([], "CPUExecutionProvider"):
        with pytest.raises(ProviderError, match="non-empty list"):
            check_providers(bad, available)
    # ORT's silent fallback from a GPU provider that failed to start is an error, not a slow success.
    with pytest.raises(ProviderError, match="asked for CUDAExecutionProvider but started"):
        check_session_providers(["CUDAExecutionProvider", CPU], [CPU])
    check_session_providers(["CUDAExecutionProvider", CPU], ["CUDAExecutionProvider", CPU])

    _, bundle, _ = exported
    with pytest.raises(ProviderError, match="NoSuchExecutionProvider"):
        TextEncoder(bundle, providers=["NoSuchExecutionProvider"])
    assert TextEncoder(bundle).providers[0] == CPU


def test_verify_checks_a_provider_against_the_cpu(exported) -> None:  # type: ignore[no-untyped-def]


    _, bundle, _ = exported
    result = run_toolkit(["verify", str(bundle), "--provider", "CPUExecutionProvider", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["provider_parity"]) == {"fp32", "fp16", "int8"}
    assert all(r["captions"] == len(HELD_OUT_CAPTIONS) and r["min_cosine"] > 0.9999 and r["passed"]
               for r in report["provider_parity"].values())

    class DriftingThere(TextEncoder):
        """Every second session (the provider's, after the CPU's) moves one caption's embedding a little."""
        sessions = 0

        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            DriftingThere.sessions += 1
            self.drifts = DriftingThere.sessions % 2 == 0

        def encode(self, texts, batch_size=64):  # type: ignore[no-untyped-def]
            out = super().encode(texts, batch_size)
            if self.drifts:
                out[0] += 0.03 * np.roll(out[0], 1)
                out[0] /= np.linalg.norm(out[0])
            return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("toolkit.export.parity.TextEncoder", DriftingThere)  # where verify looks it up
        refused = run_toolkit(["verify", str(bundle), "--provider", "CPUExecutionProvider", "--variant",
                                      "fp32", "--json"])
    assert refused.exit_code == 5 and "fp32 on CPUExecutionProvider differ from the CPU" in refused.output
    drifted = json.loads(refused.stdout)["provider_parity"]["fp32"]
    assert 0.99 < drifted["min_cosine"] < 0.9999 and drifted["passed"] is False
    unknown = run_toolkit(["verify", str(bundle), "--provider", "NoSuchExecutionProvider"])
    assert unknown.exit_code == 3 and "not in this onnxruntime build" in unknown.output
    assert run_toolkit(["verify", str(bundle), "--provider", "CPUExecutionProvider",
                               "--variant", "fp64"]).exit_code == 3


def test_parity_passed_reads_the_fp32_record(exported) -> None:  # type: ignore[no-untyped-def]
    from toolkit.runtime.manifest import parity_passed

    _, _, manifest = exported
    assert parity_passed(manifest)
    failed = {**manifest, "parity": {**manifest["parity"], "fp32": {**manifest["parity"]["fp32"], "passed": False}}}
    assert not parity_passed(failed) and not parity_passed({"parity": {"passed": True}})


def _copy(bundle: Path, dst: Path) -> Path:
    shutil.copytree(bundle, dst)
    return dst


def test_one_changed_byte_in_any_file_is_refused(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, bundle, _ = exported
    assert verify_bundle(bundle)["format_version"] == 2
    names = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert "manifest.json" in names and "manifest.sha256" in names
    for i, name in enumerate(names):
        copy = _copy(bundle, tmp_path / f"b{i}")
        target = copy / name
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
        with pytest.raises(BundleError, match=r"refused|altered|manifest"):
            verify_bundle(copy)
        with pytest.raises(BundleError):
            TextEncoder(copy)


def test_missing_and_extra_files_are_refused(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, bundle, _ = exported
    extra = _copy(bundle, tmp_path / "extra")
    (extra / "notes.txt").write_text("hi", encoding="utf-8")
    with pytest.raises(BundleError, match="not listed"):
        verify_bundle(extra)
    missing = _copy(bundle, tmp_path / "missing")
    (missing / "text_encoder.int8.onnx").unlink()
    with pytest.raises(BundleError, match=r"int8\.onnx is missing"):
        verify_bundle(missing)


def _rehashed(bundle: Path, out: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    """A copy whose manifest.json is edited and hashed again, as a forger who can rewrite both would."""
    import hashlib

    copy = _copy(bundle, out)
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    edited = edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest if edited is None else edited), encoding="utf-8")
    digest = hashlib.sha256((copy / "manifest.json").read_bytes()).hexdigest()
    (copy / "manifest.sha256").write_text(f"{digest}  manifest.json\n", encoding="utf-8")
    return copy


def test_a_rehashed_manifest_cannot_point_outside_the_hashed_files(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, bundle, _ = exported
    outside = tmp_path / "outside.onnx"
    shutil.copy(bundle / "text_encoder.int8.onnx", outside)
    escapes = {"../outside.onnx": "steps outside", str(outside): "not a relative path", "a/./b": "not normalised"}
    for n, (name, why) in enumerate(escapes.items()):
        def listed(m, name=name):  # type: ignore[no-untyped-def]
            m["files"][name] = "00" * 32
        with pytest.raises(BundleError, match=why):
            verify_bundle(_rehashed(bundle, tmp_path / f"escape{n}", listed))
    # A variant or the merges file that no hash covers: a signed manifest.sha256 must cover what is loaded.
    def fp32_elsewhere(m):  # type: ignore[no-untyped-def]
        m["variants"]["fp32"]["file"] = "../outside.onnx"
    def fp32_is_int8(m):  # type: ignore[no-untyped-def]
        m["variants"]["fp32"]["file"] = "text_encoder.int8.onnx"
    def merges_elsewhere(m):  # type: ignore[no-untyped-def]
        m["tokenizer"]["bpe_file"] = "../outside.onnx"
    with pytest.raises(BundleError, match=r"variants\.fp32\.file is not one of the hashed files"):
        TextEncoder(_rehashed(bundle, tmp_path / "v", fp32_elsewhere))
    with pytest.raises(BundleError, match=r"tokenizer\.bpe_file '\.\./outside\.onnx' is not one of the hashed"):
        TextEncoder(_rehashed(bundle, tmp_path / "t", merges_elsewhere))
    # Nor can fp32 be pointed at the int8 graph, which would then be served under fp32's approval.
    with pytest.raises(BundleError, match=r"variants\.int8 and variants\.fp32 name the same file"):
        verify_bundle(_rehashed(bundle, tmp_path / "i", fp32_is_int8))


def test_a_rehashed_manifest_with_wrong_fields_is_refused_by_name(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, bundle, _ = exported
    edits = {
        "expected a JSON object": lambda m: [m],
        r"embed_dim is 'abc', expected an integer in 1\.\.": lambda m: m.update(embed_dim="abc"),
        r"trim_to_eot is 1, expected true or false": lambda m: m.update(trim_to_eot=1),
        r"tokenizer is None, expected an object": lambda m: m.pop("tokenizer") and None,
        r"variants is \[\], expected an object": lambda m: m.update(variants=[]),
        r"variants\.int8\.approved is 'yes'": lambda m: m["variants"]["int8"].update(approved="yes"),
    }
    for n, (message, edit) in enumerate(edits.items()):
        with pytest.raises(BundleError, match=message):
            verify_bundle(_rehashed(bundle, tmp_path / f"f{n}", edit))
    unknown = _rehashed(bundle, tmp_path / "k", lambda m: m["tokenizer"].update(lowercase=True))
    with pytest.raises(BundleError, match="tokenizer settings"):
        TextEncoder(unknown)


def test_a_symlink_in_the_bundle_is_refused(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, bundle, _ = exported
    copy = _copy(bundle, tmp_path / "linked")
    merges = copy / "tokenizer" / "bpe_merges.txt.gz"
    shutil.move(merges, tmp_path / "merges.gz")
    merges.symlink_to(tmp_path / "merges.gz")  # same bytes, but whatever the link points at later is loaded
    with pytest.raises(BundleError, match=r"bpe_merges\.txt\.gz is a symlink"):
        verify_bundle(copy)


def test_encode_refuses_bad_texts_and_batch_sizes_by_name(exported) -> None:  # type: ignore[no-untyped-def]
    _, bundle, _ = exported
    encoder = TextEncoder(bundle)
    with pytest.raises(TypeError, match=r"text 1 is NoneType None"):
        encoder.encode(["a red cube", None])  # type: ignore[list-item]
    for size in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            encoder.encode(["a red cube", "b"], batch_size=size)  # type: ignore[arg-type]
    texts = np.array(["a red cube", "a blue ball", "b"])
    np.testing.assert_array_equal(encoder.encode(texts, batch_size=1), encoder.encode(list(texts)))


def test_index_compatibility_retrieval_matches_torch(exported) -> None:  # type: ignore[no-untyped-def]
    from toolkit.export.rollout import top_k

    adapter, bundle, _ = exported
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(40, 3, 32, 32, generator=generator)
    queries = [
        f"a {c} {s} next to a {c2} {s2}"
        for c, s, c2, s2 in [
            ("red", "cube", "blue", "ball"),
            ("green", "cone", "red", "box"),
            ("black", "dog", "white", "cat"),
            ("small", "boat", "big", "ship"),
            ("wooden", "chair", "metal", "table"),
        ]
    ]
    with torch.inference_mode():
        index = adapter.encode_image(images).numpy()  # the base model's image index, built once in torch
        torch_text = adapter.encode_text(adapter.tokenize(queries)).numpy()
    onnx_text = TextEncoder(bundle).encode(queries)
    assert (top_k(onnx_text, index, 10) == top_k(torch_text, index, 10)).all()
    np.testing.assert_allclose(onnx_text @ index.T, torch_text @ index.T, atol=1e-5)
    # the optional image encoder in the bundle rebuilds the same index
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(bundle / "image_encoder.fp32.onnx"), providers=["CPUExecutionProvider"]
    )
    (onnx_index,) = session.run(None, {"pixel_values": images.numpy()})
    np.testing.assert_allclose(onnx_index, index, atol=1e-5)


def test_compare_rankings_by_hand() -> None:
    from toolkit.export.rollout import compare_rankings

    shifts = compare_rankings(["q"], np.array([[0, 1, 2]]), np.array([[1, 0, 3]]), ["a", "b", "c", "d"])
    assert shifts[0].overlap == pytest.approx(2 / 3)
    assert shifts[0].mean_rank_change == 1.0 and shifts[0].entered == ["d"] and shifts[0].left == ["c"]


def test_compare_embeddings_holds_fp32_to_its_bound_by_hand() -> None:
    from toolkit.export.parity import compare_embeddings

    reference = np.array([[1.0, 0.0], [0.0, 1.0]])
    def turned(cosine: float) -> np.ndarray:  # the second row turned by the angle with this cosine
        return np.array([[1.0, 0.0], [np.sqrt(1 - cosine**2), cosine]])
    assert compare_embeddings("fp32", reference, turned(0.99995), True).passed
    below = compare_embeddings("fp32", reference, turned(0.9998), True)
    assert not below.passed and below.min_cosine == pytest.approx(0.9998)
    assert not compare_embeddings("fp32", reference, reference, tokens_identical=False).passed
    assert compare_embeddings("int8", reference, turned(0.9), True).passed  # recorded; approval decides


def test_export_is_refused_and_leaves_nothing_when_fp32_parity_fails(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import toolkit.export.bundle as bundle_module
    from toolkit.export.bundle import ParityError, Provenance, export_bundle

    real = bundle_module._torch_encoder

    def drifting(adapter):  # type: ignore[no-untyped-def]
        encode = real(adapter)
        def encode_with_drift(ids: np.ndarray) -> np.ndarray:  # the torch side moves one caption slightly
            out = encode(ids).copy()
            out[0] += 0.03 * np.roll(out[0], 1)
            return out / np.linalg.norm(out, axis=1, keepdims=True)
        return encode_with_drift

    monkeypatch.setattr(bundle_module, "_torch_encoder", drifting)
    with pytest.raises(ParityError, match=r"fp32 ONNX parity failed: min cosine 0\.99"):
        export_bundle(_tiny_adapter(tmp_path, seed=0), tmp_path / "bundle", ["fp32"], Provenance())
    assert not (tmp_path / "bundle").exists()


def test_rollout_inputs_are_refused_by_name(tmp_path: Path) -> None:
    from toolkit.export.rollout import RolloutError, load_index, read_queries

    def index(values, ids) -> Path:  # type: ignore[no-untyped-def]
        path = tmp_path / f"i{len(list(tmp_path.iterdir()))}.npy"
        np.save(path, values)
        path.with_suffix(".ids.json").write_text(json.dumps(ids), encoding="utf-8")
        return path

    good = np.ones((2, 4), dtype=np.float32)
    cases = {
        "holds <U1 values, not real numbers": index(np.array([["a", "b"], ["c", "d"]]), ["x", "y"]),
        "holds bool values": index(np.ones((2, 4), dtype=bool), ["x", "y"]),
        "row 1 holds NaN or infinite values": index(np.array([[1.0, 0.0], [np.nan, 1.0]]), ["x", "y"]),
        "non-empty 2-D": index(np.zeros((0, 4)), []),
        "must hold a JSON list of strings or integers": index(good, 5),
        r"ids must be unique; repeated: \['x'\]": index(good, ["x", "x"]),
    }
    for message, path in cases.items():
        with pytest.raises(RolloutError, match=message):
            load_index(path)
    vectors, ids = load_index(index(good, [7, "b"]))
    assert ids == ["7", "b"] and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    queries = tmp_path / "queries.txt"
    queries.write_bytes(b"a red cube\n\xff\xfe\n")
    with pytest.raises(RolloutError, match=r"queries\.txt is unreadable \(one UTF-8 query per line"):
        read_queries(queries)


def test_shadow_rollout_cli_and_mlflow(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # toolkit.cli's package __init__ registers every verb group; until they have all landed on this
    # branch the CLI package cannot be imported.
    import mlflow
    import typer

    from toolkit.cli.export import register
    from toolkit.export.bundle import log_bundle_to_mlflow
    from toolkit.export.rollout import load_index, log_shadow_report_to_mlflow, shadow_report

    _, bundle, _ = exported
    rng = np.random.default_rng(0)
    np.save(tmp_path / "index.npy", rng.standard_normal((30, 32)).astype(np.float32))
    (tmp_path / "index.ids.txt").write_text("\n".join(f"img{i}" for i in range(30)), encoding="utf-8")
    (tmp_path / "queries.txt").write_text("a red cube\na blue ball\n\ntwo dogs\n", encoding="utf-8")

    app = typer.Typer()
    register(app)
    result = run_toolkit([
            "rollout",
            "shadow",
            "--champion",
            str(bundle),
            "--challenger",
            str(bundle),
            "--queries",
            str(tmp_path / "queries.txt"),
            "--index",
            str(tmp_path / "index.npy"),
            "--k",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["queries"] == 3 and report["mean_overlap"] == 1.0 and report["identical_top_k_share"] == 1.0
    assert set(report["latency_ms"]["champion"]) == {"p50", "p90", "p95", "p99"}
    # Another text tower on the same base moves the rankings, and each role keeps its own bundle.
    from toolkit.export.bundle import Provenance, export_bundle

    other = tmp_path / "other"
    export_bundle(_tiny_adapter(tmp_path, seed=1), other, ["fp32"], Provenance(base_weights_sha256="ab" * 32))
    queries = ["a red cube", "a blue ball", "two dogs", "a green star left of a cat", "an empty room"]
    moved = shadow_report(bundle, other, queries, tmp_path / "index.npy", k=5)
    assert moved["champion"] == str(bundle) and moved["challenger"] == str(other) and moved["same_base_weights"]
    assert moved["mean_overlap"] < 1.0 and moved["most_changed"][0]["overlap"] < 1.0
    index, _ = load_index(tmp_path / "index.npy")
    champion_top = np.argsort(-(TextEncoder(bundle).encode(queries) @ index.T), axis=1)
    first = moved["per_query"][0]
    assert first["left"] and set(first["left"]) <= {f"img{i}" for i in champion_top[0, :5]}

    no_results = run_toolkit(["rollout", "shadow", "--champion", str(bundle), "--challenger", str(bundle),
                                     "--queries", str(tmp_path / "queries.txt"), "--index",
                                     str(tmp_path / "index.npy"), "--k", "0"])
    assert no_results.exit_code == 2 and "not a positive number" in no_results.output
    assert run_toolkit(["verify", str(bundle)]).exit_code == 0
    broken = _copy(bundle, tmp_path / "broken")
    (broken / "tokenizer" / "bpe_merges.txt.gz").write_bytes(b"x")
    assert run_toolkit(["verify", str(broken)]).exit_code == 5

    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("export-test", artifact_location=(tmp_path / "art").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            uri = log_bundle_to_mlflow(bundle)
            log_shadow_report_to_mlflow(shadow_report(bundle, bundle, ["a cat"], tmp_path / "index.npy", k=3))
        logged = mlflow.get_run(run.info.run_id)
        artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "bundle")}
    finally:
        mlflow.set_tracking_uri(previous_uri)
    assert logged.data.metrics["parity/fp32/min_cosine"] >= 0.9999
    assert logged.data.metrics["shadow/mean_overlap"] == 1.0
    assert uri.startswith("models:/") or "text_encoder" in uri
    assert "bundle/manifest.json" in artifacts


@pytest.mark.slow
def test_runtime_in_fresh_venv_never_imports_torch(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A venv with only onnxruntime + numpy + this package (--no-deps) encodes like the dev env."""
    import subprocess
    import venv

    _, bundle, _ = exported
    repo = REPO
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "onnxruntime", "numpy"], check=True, timeout=300)
    subprocess.run([*pip, "--no-deps", str(repo)], check=True, timeout=300, cwd=tmp_path)
    texts = ["a red cube left of a blue ball", "word " * 60, "!!!"]
    script = (
        "import json, sys\n"
        "from toolkit.runtime.encoder import TextEncoder\n"
        f"vectors = TextEncoder({str(bundle)!r}).encode({texts!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'ftfy' not in sys.modules\n"
        "print(json.dumps(vectors.tolist()))\n"
    )
    done = subprocess.run(
        [python, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PATH": str(env_dir / "bin")},
    )
    assert done.returncode == 0, done.stderr
    got = np.asarray(json.loads(done.stdout), dtype=np.float32)
    np.testing.assert_allclose(got, TextEncoder(bundle).encode(texts), atol=1e-6)


def test_fp16_variant_keeps_overflow_prone_ops_in_fp32(exported) -> None:  # type: ignore[no-untyped-def]
    import onnx

    _, bundle, _ = exported
    graph = onnx.load(str(bundle / "text_encoder.fp16.onnx")).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types |= {i.name: i.data_type for i in graph.initializer}
    kept = [n for n in graph.node if n.op_type in ("LayerNormalization", "Softmax", "ReduceL2")]
    assert len(kept) >= 5 + 2 + 1  # 2 layers x 2 LayerNorms + ln_final, 2 softmaxes, the L2 norm
    assert {types[n.input[0]] for n in kept} == {onnx.TensorProto.FLOAT}
    matmul_inputs = {types.get(n.input[0]) for n in graph.node if n.op_type == "MatMul"}
    assert onnx.TensorProto.FLOAT16 in matmul_inputs  # the heavy work is fp16
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_export_cli_writes_a_bundle_and_rejects_bad_variants(tiny_config_path: Path, tmp_path: Path) -> None:
    import typer

    from toolkit.cli.export import register

    app = typer.Typer()
    register(app)
    bad = run_toolkit([
            "export",
            "--model",
            f"open_clip:{tiny_config_path}",
            "--out",
            str(tmp_path / "b"),
            "--variants",
            "fp32,int4",
            "--allow-random-init",
        ],
    )
    assert bad.exit_code == 2 and "int4" in bad.output  # a bad option value
    no_weights = run_toolkit(["export", "--model", f"open_clip:{tiny_config_path}", "--out", str(tmp_path / "b")]
    )
    assert no_weights.exit_code == 3 and "names no weights file" in no_weights.output
    lone_device = run_toolkit(["export", "--model", f"open_clip:{tiny_config_path}", "--out",
                                      str(tmp_path / "b"), "--allow-random-init", "--approve-device", "cuda"])
    assert lone_device.exit_code == 3 and "needs --approve-on" in lone_device.output
    assert not (tmp_path / "b").exists()
    # A destination that cannot be written is refused before the model loads (the weights are absent here).
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    for out, why in ((tmp_path / "a-file" / "sub", "a-file is a file"), (tmp_path / "a-file", "is a file")):
        unwritable = run_toolkit(["export", "--model", f"open_clip:{tiny_config_path}@{tmp_path / 'none'}",
                                         "--out", str(out)])
        assert unwritable.exit_code == 3 and why in " ".join(unwritable.output.split()), unwritable.output
    non_utf8 = tmp_path / "metrics.bin"
    non_utf8.write_bytes(b'{"r5": 1.0\xff}')
    unreadable = run_toolkit(["export", "--model", f"open_clip:{tiny_config_path}", "--out",
                                     str(tmp_path / "b"), "--allow-random-init", "--eval-metrics", str(non_utf8)])
    assert unreadable.exit_code == 3 and "not a readable UTF-8 JSON file" in " ".join(unreadable.output.split())
    for bound in ("nan", "1.5"):
        nonsense = run_toolkit(["verify", str(tmp_path), "--min-cosine", bound])
        assert nonsense.exit_code == 2 and "is not a cosine in [-1, 1]" in " ".join(nonsense.output.split())
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"retrieval_r5": 41.0}', encoding="utf-8")
    captions = tmp_path / "held_out.txt"
    captions.write_text("a red cube\n\nthe second held-out caption\n", encoding="utf-8")
    ok = run_toolkit([
            "export",
            "--model",
            f"open_clip:{tiny_config_path}",
            "--out",
            str(tmp_path / "b"),
            "--allow-random-init",
            "--eval-metrics",
            str(metrics),
            "--parity-captions",
            str(captions),
            "--json",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["variants"] == {
        "fp32": {"file": "text_encoder.fp32.onnx", "approved": True, "basis": "parity", "reasons": [],
                 "domains": ["ai.onnx", "com.microsoft"]}
    }
    written = verify_bundle(tmp_path / "b")
    assert written["eval_metrics"] == {"retrieval_r5": 41.0}
    assert written["parity"]["fp32"]["captions"] == len(HELD_OUT_CAPTIONS) + 2
