"""Score models on benchmarks: batched no-grad encoding here, every number computed in toolkit.eval.metrics.

Result shape: `{model: {benchmark: {subset: {metric: value}}}}`, values in percent. Metric names:
itt, tot (SugarCrepe++), acc (SugarCrepe, domain), r1/r5/r10 (retrieval, subsets text_to_image and
image_to_text), text/image/group (Winoground), top1 (zero-shot). Averages are extra subsets: SugarCrepe++
`average`; SugarCrepe `add`, `replace`, `swap`; domain `swap`, `replace` and `all` (over items).

Failures are kept for human review, the worst first (largest confuser-minus-positive margin), at most
`EvalConfig.max_failures` per (benchmark, subset, metric).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.images import load_rgb
from toolkit.eval import metrics
from toolkit.eval.benchmarks import (
    Benchmark,
    BenchmarkError,
    CompositionItem,
    CompositionSet,
    RetrievalSet,
    WinogroundSet,
    ZeroShotSet,
)
from toolkit.eval.domain_sets import kind_of_generator
from toolkit.eval.names import benchmark_keys

Results = dict[str, dict[str, dict[str, dict[str, float]]]]


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 64
    device: str = "cpu"
    max_failures: int = 200
    decode_threads: int = 4  # image decoding overlaps well in threads: PIL releases the GIL


@dataclass(frozen=True)
class Failure:
    """One item a model got wrong: the right text and the confuser that beat (or tied) it.

    Per metric: itt/acc: the (weaker) positive vs the negative, scored against the image. tot: the second
    positive vs the negative; positive_score is s(P1,P2), confuser_score the larger of s(P1,N), s(P2,N).
    r1 text_to_image: the caption; confuser = the best wrong image's path. r1 image_to_text: the image's
    best caption vs the best wrong caption. Winoground group: caption_0 vs caption_1 on image_0.
    top1: the true class name vs the predicted one.
    """

    benchmark: str
    subset: str
    metric: str
    item_id: str
    image: str
    positive: str
    confuser: str
    positive_score: float
    confuser_score: float
    generator: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchmarkResult:
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # subset -> metric -> value
    counts: dict[str, int] = field(default_factory=dict)  # subset -> items scored
    failures: list[Failure] = field(default_factory=list)
    # subset -> metric -> which items were right, where a metric is a mean over items (not for averages of
    # subset means): what paired comparisons between models need (`toolkit.eval.metrics.paired_difference`).
    correct: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


@dataclass
class EvalReport:
    results: Results
    failures: dict[str, list[Failure]]  # model -> failures
    counts: dict[str, dict[str, dict[str, int]]]  # model -> benchmark -> subset -> items
    # model -> benchmark -> subset -> metric -> per-item flags (in item order, the same for every model)
    correct: dict[str, dict[str, dict[str, dict[str, np.ndarray]]]] = field(default_factory=dict)


class Encoder:
    """Batched no-grad encoding for one model, caching images and texts by identity."""

    def __init__(self, adapter: Any, config: EvalConfig) -> None:
        from toolkit.adapters.devices import resolve_device  # torch loads only when a model does (here, not at the top)

        self.adapter = adapter
        self.config = config
        self.device = resolve_device(config.device)
        adapter.model.to(self.device).eval()
        self._transform = adapter.image_transform()
        self._images: dict[Path, np.ndarray] = {}
        self._texts: dict[str, np.ndarray] = {}

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        todo = list(dict.fromkeys(t for t in texts if t not in self._texts))
        for start in range(0, len(todo), self.config.batch_size):
            chunk = todo[start:start + self.config.batch_size]
            with torch.inference_mode():
                tokens = self.adapter.tokenize(chunk).to(self.device)
                emb = self.adapter.encode_text(tokens, normalize=True).float().cpu().numpy()
            self._texts.update(zip(chunk, emb, strict=True))
        return np.stack([self._texts[t] for t in texts]).astype(np.float64)

    def images(self, paths: Sequence[Path]) -> np.ndarray:
        import torch
        from PIL import Image, UnidentifiedImageError

        def load(path: Path) -> Any:
            try:
                return self._transform(load_rgb(path))
            except Image.DecompressionBombError as err:  # not an OSError: PIL's guard against huge images
                raise BenchmarkError(f"image {path} is too large to decode ({err}); shrink it or take it out "
                                     "of the benchmark") from err
            except (OSError, UnidentifiedImageError) as err:
                raise BenchmarkError(f"image {path} cannot be read ({err}); replace it") from err

        todo = list(dict.fromkeys(p for p in paths if p not in self._images))
        with ThreadPoolExecutor(max(1, self.config.decode_threads)) as pool:
            for start in range(0, len(todo), self.config.batch_size):
                chunk = todo[start:start + self.config.batch_size]
                pixels = list(pool.map(load, chunk))
                with torch.inference_mode():
                    batch = torch.stack(pixels).to(self.device)
                    emb = self.adapter.encode_image(batch, normalize=True).float().cpu().numpy()
                self._images.update(zip(chunk, emb, strict=True))
        return np.stack([self._images[p] for p in paths]).astype(np.float64)


def _worst_first(failures: list[Failure], limit: int) -> list[Failure]:
    return sorted(failures, key=lambda f: f.positive_score - f.confuser_score)[:limit]


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values))


def _score_composition(name: str, bench: CompositionSet, enc: Encoder, config: EvalConfig) -> BenchmarkResult:

    result = BenchmarkResult()
    domain_flags: dict[str, list[np.ndarray]] = {}
    for subset, items in bench.subsets.items():
        image = enc.images([i.image for i in items])
        pos = enc.texts([i.positive for i in items])
        neg = enc.texts([i.negative for i in items])
        s_pos = metrics.paired_cosine(image, pos)
        s_neg = metrics.paired_cosine(image, neg)
        fails: list[Failure] = []
        if bench.kind == "sugarcrepe_pp":
            pos2 = enc.texts([i.positive2 or "" for i in items])
            scored = metrics.sugarcrepe_pp(image, pos, pos2, neg)
            s_pos2 = metrics.paired_cosine(image, pos2)
            p1_p2 = metrics.paired_cosine(pos, pos2)
            text_neg = np.maximum(metrics.paired_cosine(pos, neg), metrics.paired_cosine(pos2, neg))
            for k in np.flatnonzero(~scored.correct["itt"]):
                weaker = items[k].positive if s_pos[k] <= s_pos2[k] else items[k].positive2 or ""
                fails.append(_failure(name, subset, "itt", items[k], weaker, min(s_pos[k], s_pos2[k]),
                                      s_neg[k]))
            for k in np.flatnonzero(~scored.correct["tot"]):
                # TOT compares texts only: the paraphrase pair's similarity against the nearer negative.
                fails.append(_failure(name, subset, "tot", items[k], items[k].positive2 or "", p1_p2[k],
                                      text_neg[k]))
        else:
            scored = metrics.image_text_accuracy(image, pos, neg)
            for k in np.flatnonzero(~scored.correct["acc"]):
                fails.append(_failure(name, subset, "acc", items[k], items[k].positive, s_pos[k], s_neg[k]))
            if bench.kind == "domain":
                for kind in (kind_of_generator(subset), "all"):
                    domain_flags.setdefault(kind, []).append(scored.correct["acc"])
        result.metrics[subset] = scored.metrics
        result.counts[subset] = len(items)
        result.correct[subset] = scored.correct
        for metric in scored.metrics:
            result.failures += _worst_first([f for f in fails if f.metric == metric], config.max_failures)
    _add_averages(bench.kind, result, domain_flags)
    return result


def _failure(name: str, subset: str, metric: str, item: CompositionItem, positive: str,
             positive_score: float, confuser_score: float) -> Failure:
    return Failure(name, subset, metric, item.item_id, str(item.image), positive, item.negative,
                   float(positive_score), float(confuser_score), item.generator)


def _add_averages(kind: str, result: BenchmarkResult, domain_flags: dict[str, list[np.ndarray]]) -> None:
    subsets = dict(result.metrics)
    if kind == "sugarcrepe_pp":
        result.metrics["average"] = {m: _mean([v[m] for v in subsets.values()]) for m in ("itt", "tot")}
    elif kind == "sugarcrepe":
        for group in ("add", "replace", "swap"):
            members = [v["acc"] for s, v in subsets.items() if s.startswith(group + "_")]
            if members:
                result.metrics[group] = {"acc": _mean(members)}
    elif kind == "domain":
        # Over items, not a mean of generator means: generators yield very different item counts.
        for group, flags in domain_flags.items():
            result.correct[group] = {"acc": np.concatenate(flags)}
            result.metrics[group] = {"acc": metrics.percent(result.correct[group]["acc"])}


def _score_retrieval(name: str, bench: RetrievalSet, enc: Encoder, config: EvalConfig) -> BenchmarkResult:
    images = metrics.normalise(enc.images(bench.images), "images")
    texts = metrics.normalise(enc.texts(bench.texts), "texts")
    index = np.asarray(bench.text_image, dtype=np.int64)
    scores = metrics.retrieval(images, texts, index)  # in blocks: the full matrix is never built
    result = BenchmarkResult(
        metrics={"text_to_image": scores.text_to_image.metrics,
                 "image_to_text": scores.image_to_text.metrics},
        counts={"text_to_image": len(bench.texts), "image_to_text": len(bench.images)},
        correct={"text_to_image": scores.text_to_image.correct, "image_to_text": scores.image_to_text.correct},
    )
    # Failures: only their own rows (texts) and columns (images) of the similarities, a block at a time.
    block = metrics.RETRIEVAL_BLOCK
    t2i: list[Failure] = []
    missed_texts = np.flatnonzero(~scores.text_to_image.correct["r1"])
    for start in range(0, len(missed_texts), block):
        rows = missed_texts[start:start + block]
        for t, row in zip(rows, texts[rows] @ images.T, strict=True):
            right = row[index[t]]
            row[index[t]] = -np.inf
            wrong = int(np.argmax(row))
            t2i.append(Failure(name, "text_to_image", "r1", bench.text_ids[t], str(bench.images[index[t]]),
                               bench.texts[t], str(bench.images[wrong]), float(right), float(row[wrong])))
    i2t: list[Failure] = []
    missed_images = np.flatnonzero(~scores.image_to_text.correct["r1"])
    columns = max(1, block // 4)
    for start in range(0, len(missed_images), columns):
        chunk = missed_images[start:start + columns]
        for i, column in zip(chunk, (texts @ images[chunk].T).T, strict=True):
            own = np.flatnonzero(index == i)
            best_own = int(own[np.argmax(column[own])])
            others = np.where(index == i, -np.inf, column)
            wrong = int(np.argmax(others))
            i2t.append(Failure(name, "image_to_text", "r1", bench.text_ids[best_own], str(bench.images[i]),
                               bench.texts[best_own], bench.texts[wrong], float(column[best_own]),
                               float(others[wrong])))
    result.failures = _worst_first(t2i, config.max_failures) + _worst_first(i2t, config.max_failures)
    return result


def _score_winoground(name: str, bench: WinogroundSet, enc: Encoder, config: EvalConfig) -> BenchmarkResult:
    items = bench.items
    i0, i1 = enc.images([x.image_0 for x in items]), enc.images([x.image_1 for x in items])
    c0, c1 = enc.texts([x.caption_0 for x in items]), enc.texts([x.caption_1 for x in items])
    scored = metrics.winoground(i0, i1, c0, c1)
    c0_i0, c1_i0 = metrics.paired_cosine(c0, i0), metrics.paired_cosine(c1, i0)
    fails = [Failure(name, "all", "group", items[k].item_id, str(items[k].image_0), items[k].caption_0,
                     items[k].caption_1, float(c0_i0[k]), float(c1_i0[k]))
             for k in np.flatnonzero(~scored.correct["group"])]
    return BenchmarkResult({"all": scored.metrics}, {"all": len(items)},
                           _worst_first(fails, config.max_failures), {"all": scored.correct})


def _score_zeroshot(name: str, bench: ZeroShotSet, enc: Encoder, config: EvalConfig) -> BenchmarkResult:
    prompts = [t.replace("{}", c) for c in bench.classnames for t in bench.templates]
    per_template = enc.texts(prompts).reshape(len(bench.classnames), len(bench.templates), -1)
    classes = metrics.class_embeddings(per_template)
    images = enc.images(bench.images)
    labels = np.asarray(bench.labels, dtype=np.int64)
    scored, predicted = metrics.zero_shot_top1(images, classes, labels)
    sims = metrics.cosine_matrix(images, classes)
    fails = [Failure(name, "all", "top1", str(k), str(bench.images[k]), bench.classnames[labels[k]],
                     bench.classnames[predicted[k]], float(sims[k, labels[k]]), float(sims[k, predicted[k]]))
             for k in np.flatnonzero(~scored.correct["top1"])]
    return BenchmarkResult({"all": scored.metrics}, {"all": len(bench.images)},
                           _worst_first(fails, config.max_failures), {"all": scored.correct})


def score_benchmark(name: str, bench: Benchmark, enc: Encoder, config: EvalConfig) -> BenchmarkResult:
    if isinstance(bench, CompositionSet):
        return _score_composition(name, bench, enc, config)
    if isinstance(bench, RetrievalSet):
        return _score_retrieval(name, bench, enc, config)
    if isinstance(bench, WinogroundSet):
        return _score_winoground(name, bench, enc, config)
    return _score_zeroshot(name, bench, enc, config)


def benchmark_names(benchmarks: Sequence[Benchmark]) -> list[str]:
    """The results key of each benchmark (`toolkit.eval.names.benchmark_keys`: the kind, suffixed `_2`, `_3`…
    when one kind appears more than once; keys stay MLflow-safe)."""
    return [key.name for key in benchmark_keys([bench.kind for bench in benchmarks])]


def evaluate(models: Sequence[str], benchmarks: Sequence[Benchmark], config: EvalConfig | None = None,
             progress: Callable[[str], None] | None = None,
             on_step: Callable[[int, int], None] | None = None) -> EvalReport:
    """Score each model (a MODEL spec, see toolkit.adapters.loading) on each loaded benchmark.

    `progress(message)` is called before each (model, benchmark) step, for the CLI's status line;
    `on_step(done, total)` after each, for progress counts.
    """
    from toolkit.adapters.loading import load_model  # torch loads only when a model does (here, not at the top)

    config = config or EvalConfig()
    names = benchmark_names(benchmarks)
    report = EvalReport({}, {}, {}, {})
    done, total = 0, len(models) * len(benchmarks)
    for model in models:
        encoder = Encoder(load_model(model), config)
        report.results[model], report.failures[model], report.counts[model] = {}, [], {}
        report.correct[model] = {}
        for name, bench in zip(names, benchmarks, strict=True):
            if progress is not None:
                progress(f"{model}: {name}")
            scored = score_benchmark(name, bench, encoder, config)
            report.results[model][name] = scored.metrics
            report.counts[model][name] = scored.counts
            report.correct[model][name] = scored.correct
            report.failures[model] += scored.failures
            done += 1
            if on_step is not None:
                on_step(done, total)
    return report


def score_benchmarks(encoder: Encoder, benchmarks: Sequence[Benchmark],
                     config: EvalConfig | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """One encoder's `{benchmark name: {subset: {metric: value}}}`, names from `benchmark_names`.

    For callers that encode texts some other way (e.g. an exported ONNX variant, see
    `toolkit.export.approval`): any `Encoder` subclass is scored by the same metric code.
    """
    config = config or EvalConfig()
    return {name: score_benchmark(name, bench, encoder, config).metrics
            for name, bench in zip(benchmark_names(benchmarks), benchmarks, strict=True)}
