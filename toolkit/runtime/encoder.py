"""Torch-free text encoding from an exported bundle: onnxruntime + numpy (+ ftfy when installed).

    from toolkit.runtime import TextEncoder
    vectors = TextEncoder("bundle/").encode(["a red cube left of a blue ball"])  # float32, unit rows

    TextEncoder("bundle/", providers=["CUDAExecutionProvider"])  # with onnxruntime-gpu installed

The bundle is verified (SHA-256 of every file) before anything is loaded. Texts are tokenized exactly
as in training (see `toolkit.runtime.tokenizer`). Each batch is trimmed to its longest <eot> + 1 before
it reaches ORT: attention is causal and pooling reads the <eot> position, so the padding after the
longest caption's <eot> cannot change any embedding, and most of a 77-token row is padding.
(For the fp32/fp16 graphs this is exact; dynamic int8 quantises activations per tensor over the whole
batch, so its output depends on batch content anyway, and its parity is measured on this trimmed path.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.errors import InputError
from toolkit.runtime.manifest import BundleError, variant_entry, verify_bundle
from toolkit.runtime.tokenizer import ClipBpeTokenizer, TokenizerSettings

CPU = "CPUExecutionProvider"


class ProviderError(InputError):
    """An ONNX Runtime execution provider that cannot run here, or that ORT replaced without asking."""


def check_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """The requested execution providers, in order of preference, each one available in this ORT build."""
    if isinstance(requested, str) or not requested:
        raise ProviderError(f"providers must be a non-empty list of names, got {requested!r}")
    missing = [name for name in requested if name not in available]
    if missing:
        hint = (" (install onnxruntime-gpu in place of onnxruntime)"
                if any(name in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for name in missing) else "")
        raise ProviderError(f"execution provider(s) {missing} are not in this onnxruntime build; available: "
                            f"{list(available)}{hint}")
    return list(requested)


def check_session_providers(requested: Sequence[str], active: Sequence[str]) -> None:
    """ORT falls back to the CPU when a GPU provider fails to start (no driver, wrong CUDA libraries) and
    only logs it; serving on the wrong device must be an error instead."""
    if not active or active[0] != requested[0]:
        raise ProviderError(f"onnxruntime was asked for {requested[0]} but started {list(active)}: the "
                            "provider failed to initialise (check the driver and CUDA/cuDNN libraries that "
                            "onnxruntime-gpu needs), so the session fell back")


def trim_to_longest_eot(ids: np.ndarray, eot_id: int) -> np.ndarray:
    """Drop the columns after the last <eot> of the batch (first <eot> per row: pad may equal <eot>)."""
    is_eot = ids == eot_id
    if not is_eot.any(axis=1).all():
        raise ValueError(
            f"every row must contain the <eot> id {eot_id}; tokenize with the bundle's tokenizer"
        )
    last = int(is_eot.argmax(axis=1).max())
    return ids[:, : last + 1]


class TextEncoder:
    """Encode texts with a bundle's text encoder. `variant` picks fp32 / fp16 / int8 if the bundle has it.

    `providers`: ONNX Runtime execution providers in order of preference. The default, the CPU, is where
    export measured parity and approval; on another provider, `toolkit verify BUNDLE --provider NAME`
    checks that it encodes as the CPU does before serving from it.
    """

    def __init__(
        self,
        bundle_dir: str | Path,
        variant: str = "fp32",
        *,
        require_ftfy: bool = False,
        trim: bool = True,
        intra_op_threads: int | None = None,
        allow_unapproved: bool = False,
        providers: Sequence[str] = (CPU,),
    ) -> None:
        import onnxruntime as ort

        requested = check_providers(providers, ort.get_available_providers())
        self.bundle_dir = Path(bundle_dir)
        self.manifest: dict[str, Any] = verify_bundle(self.bundle_dir)
        entry = variant_entry(self.manifest, variant, self.bundle_dir)
        if entry.get("approved") is not True and not allow_unapproved:
            why = "; ".join(entry.get("reasons", [])) or "no approval recorded"
            raise BundleError(
                f"{self.bundle_dir}: variant {variant!r} is not approved ({why}); re-export with "
                "`toolkit export --approve-on KIND:PATH`, or pass allow_unapproved=True outside serving"
            )
        self.variant = variant
        self.approved = entry.get("approved") is True
        try:
            settings = TokenizerSettings(**self.manifest["tokenizer"])
        except TypeError as err:  # keys this toolkit does not know, or a required one missing
            raise BundleError(f"{self.bundle_dir / 'manifest.json'}: tokenizer settings {err}") from err
        self.tokenizer = ClipBpeTokenizer(settings, self.bundle_dir, require_ftfy=require_ftfy)
        self.eot_id = int(self.manifest["eot_id"])
        self.embed_dim = int(self.manifest["embed_dim"])
        # Trimming is exact only for pooling that reads positions up to <eot> (recorded at export).
        self.trim = trim and bool(self.manifest["trim_to_eot"])
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        self.session = ort.InferenceSession(str(self.bundle_dir / entry["file"]), options, providers=requested)
        check_session_providers(requested, self.session.get_providers())
        self.providers: list[str] = self.session.get_providers()
        self._input = str(self.manifest["input_name"])

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        return self.tokenizer(texts)

    def encode_ids(self, ids: np.ndarray) -> np.ndarray:
        ids = np.ascontiguousarray(ids, dtype=np.int64)  # ORT wants exactly int64, also on Windows
        if self.trim:
            ids = trim_to_longest_eot(ids, self.eot_id)
        (out,) = self.session.run(None, {self._input: ids})
        return np.asarray(out, dtype=np.float32)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """float32 [len(texts), embed_dim], unit rows, in the order given.

        Texts are batched by token length (shortest first) so that trimming removes as much padding
        as possible, then put back in order.
        """
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not one string")
        texts = list(texts)  # a numpy array of strings too
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"encode: text {position} is {type(text).__name__} {text!r}, not a string")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"encode: batch_size must be a positive integer, got {batch_size!r}")
        out = np.zeros((len(texts), self.embed_dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenize(texts)
        lengths = (ids == self.eot_id).argmax(axis=1)
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self.encode_ids(ids[rows])
        return out
