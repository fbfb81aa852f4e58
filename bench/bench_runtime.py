"""Text encoding on CPU: our torch-free runtime (ONNX Runtime, <eot> trimming) vs open_clip's own
`encode_text` (torch eager, inference mode), side by side in one run.

A random-init ViT-B-32 (open_clip.create_model without weights; speed does not depend on the values)
is exported fp32 + int8 with the real export path. Both sides include tokenization. Batch 1 and
batch 32 of realistic captions; median of repeated passes; ratios printed. The CPU may be shared:
the load average is printed with the numbers.

The input guard (`toolkit.export.guard`, in every bundle) is measured side by side: the bundle is exported
without it, then copied with the guard added to the very same graphs; `guard` is guarded/unguarded time.

    python bench/bench_runtime.py [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

CAPTIONS = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs playing with a red frisbee in a grassy park.",
    "A kitchen with white cabinets, a stainless steel fridge and a small wooden table.",
    "A red double-decker bus driving down a city street next to a tall building.",
    "A plate of pasta with tomato sauce, basil leaves and grated cheese on top.",
    "A little girl in a yellow raincoat holding an umbrella on a rainy sidewalk.",
    "A cat sleeping on a laptop keyboard on a cluttered desk.",
    "Several people standing around a table with laptops in a bright office.",
    "A blue cube to the left of a red ball on a grey floor.",
    "An old man sitting on a bench feeding pigeons in the square.",
    "A train pulling into a station with passengers waiting on the platform.",
    "A bowl of fruit with bananas, apples and oranges on a kitchen counter.",
    "A skier jumping off a snowy ramp under a clear blue sky.",
    "Two giraffes standing next to each other near a tall tree.",
    "A young boy swinging a baseball bat at a ball during a game.",
    "A bathroom with a white sink, a mirror and a green towel hanging on the wall.",
]


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, the functions taking turns in every repeat: on a shared CPU, load
    that comes and goes then hits all of them alike, which a small difference (the guard) needs."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _guard_alone_seconds(context: int, eot_id: int, ids: Any, repeats: int, threads: int | None) -> float:
    """The guard's ops by themselves (in front of an Identity), fed the runtime's ids: an upper bound on
    what the guard adds to a call (it includes a session.run of its own), steadier than a difference of
    two noisy model timings on a loaded CPU."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from toolkit.export.guard import add_input_guard

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input_ids"], ["guarded"])], "guard",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("guarded", TensorProto.INT64, ["batch", "sequence"])])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "guard.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
        add_input_guard(path, context, eot_id)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    per_pass = _median_seconds(lambda: [session.run(None, {"input_ids": row}) for row in ids], repeats)
    return per_pass / len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads for BOTH torch and ORT (default: each library's own). "
        "On a shared, overloaded CPU, 1 keeps spinning thread pools from distorting both.",
    )
    args = parser.parse_args()

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    import shutil

    from toolkit.adapters.open_clip_adapter import OpenClipAdapter
    from toolkit.export.bundle import export_bundle
    from toolkit.export.guard import add_input_guard
    from toolkit.runtime.encoder import TextEncoder
    from toolkit.runtime.manifest import write_manifest

    torch.manual_seed(0)
    adapter = OpenClipAdapter.create("ViT-B-32", None)
    model: Any = adapter.model.eval()
    tokenizer = adapter.tokenize
    batch32 = (CAPTIONS * 2)[:32]

    def torch_encode(texts: list[str]) -> object:
        with torch.inference_mode():
            return model.encode_text(tokenizer(texts), normalize=True)

    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        start = time.perf_counter()
        manifest = export_bundle(adapter, bundle, ["fp32", "int8"], guard=False)
        guarded = Path(tmp) / "guarded"
        shutil.copytree(bundle, guarded)
        for entry in manifest["variants"].values():
            add_input_guard(guarded / entry["file"], manifest["context_length"], manifest["eot_id"])
        write_manifest(guarded, {k: v for k, v in manifest.items() if k != "files"})
        print(
            f"export + parity: {time.perf_counter() - start:.1f} s; parity: "
            + ", ".join(f"{v} min cos {r['min_cosine']:.6f}" for v, r in manifest["parity"].items())
        )
        encoders = {  # timing only: int8 need not be approved to be measured
            f"{v}{suffix}": TextEncoder(folder, v, intra_op_threads=args.threads, allow_unapproved=True)
            for v in ("fp32", "int8") for suffix, folder in (("", guarded), (" unguarded", bundle))
        }
        load_before = os.getloadavg()
        results: dict[str, dict[str, float]] = {}
        for label, texts_per_call in (("batch 1", [[c] for c in CAPTIONS]), ("batch 32", [batch32])):
            calls = len(texts_per_call)

            def run(encode: Callable[[list[str]], object], batches: list[list[str]] = texts_per_call) -> None:
                for batch in batches:
                    encode(batch)

            row = {"torch": _median_seconds(lambda: run(torch_encode), args.repeats) / calls}
            onnx_runs = {variant: partial(run, encoder.encode) for variant, encoder in encoders.items()}
            row |= {variant: t / calls for variant, t in _interleaved_medians(onnx_runs, args.repeats).items()}
            trimmed = [encoders["fp32"].tokenize(texts)[:, :manifest["context_length"]] for texts in texts_per_call]
            row["guard alone"] = _guard_alone_seconds(manifest["context_length"], manifest["eot_id"], trimmed,
                                                      args.repeats, args.threads)
            results[label] = row
        load_after = os.getloadavg()

    print(
        f"CPU: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"ORT intra-op threads {args.threads or 'default'}, "
        f"load average before/after {load_before[0]:.2f}/{load_after[0]:.2f}"
    )
    print(
        f"{'':10} {'torch eager':>12} {'ORT fp32':>10} {'ORT int8':>10} "
        f"{'fp32 ×':>8} {'int8 ×':>8} {'int8/fp32':>10} {'guard fp32':>11} {'guard int8':>11}"
    )
    for label, row in results.items():
        print(
            f"{label:10} {row['torch'] * 1e3:10.2f}ms {row['fp32'] * 1e3:8.2f}ms {row['int8'] * 1e3:8.2f}ms "
            f"{row['torch'] / row['fp32']:8.2f} {row['torch'] / row['int8']:8.2f} "
            f"{row['fp32'] / row['int8']:10.2f} "
            f"{row['fp32'] / row['fp32 unguarded'] - 1:+10.1%} {row['int8'] / row['int8 unguarded'] - 1:+10.1%}"
        )
    print("(ms per call, guarded graphs; × = speed-up over torch eager; guard = guarded vs unguarded time - 1)")
    for label, row in results.items():
        alone = row["guard alone"]
        print(f"guard ops alone, {label}: {alone * 1e6:.0f} µs per call = {alone / row['fp32']:.2%} of an fp32 "
              f"call, {alone / row['int8']:.2%} of an int8 call")


if __name__ == "__main__":
    main()
