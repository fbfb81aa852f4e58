"""The regression set as a benchmark: every confirmed model error, re-scored on any model.

Each item asks one question, strictly (a tie is wrong, as everywhere in `toolkit eval`):
    confuser_kind "text"   does the item's image score the positive above the confuser text?
                           (a composition item, scored by toolkit.eval.evaluate like a domain set)
    confuser_kind "image"  does the positive text score the item's image above the confuser image?
                           (a text-to-image retrieval miss: its confuser is the wrongly preferred image)
Accuracy is in percent over all items. `promote` scores candidate and champion on today's set, so the two
are compared on the same items even when the set has grown since the champion was promoted.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.catalog.db import Store
from toolkit.core.config import resolve_tracking_uri
from toolkit.core.errors import InputError
from toolkit.eval import metrics
from toolkit.eval.benchmarks import CompositionItem, CompositionSet
from toolkit.eval.evaluate import Encoder, EvalConfig, score_benchmark
from toolkit.governance.review import regression_set

SUBSET = "reviewed"


class RegressionSetError(InputError):
    """The regression set or a model to score on it cannot be used; the message names the item or model."""


@dataclass(frozen=True)
class ImageConfuserItem:
    text: str
    image: Path
    confuser_image: Path


@dataclass(frozen=True)
class RegressionBenchmark:
    composition: CompositionSet  # image with positive vs confuser text
    image_confusers: list[ImageConfuserItem] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(items) for items in self.composition.subsets.values()) + len(self.image_confusers)


def _existing(path: str, item: dict[str, Any]) -> Path:
    if Path(path).is_file():
        return Path(path)
    review_item = item.get("review_item")
    if review_item is None:
        raise RegressionSetError(f"regression item image {path} does not exist; restore it")
    raise RegressionSetError(
        f"regression item (review item {review_item}): image {path} does not exist; restore it, or take the "
        f"item out of the regression set with a new verdict (`toolkit review record {review_item} ambiguous`)")


def regression_benchmark(items: list[dict[str, Any]]) -> RegressionBenchmark:
    """`review.regression_set` rows -> a benchmark; every image is checked here, before any scoring."""
    composition: list[CompositionItem] = []
    image_confusers: list[ImageConfuserItem] = []
    for position, item in enumerate(items):
        image = _existing(item["image_path"], item)
        if item.get("confuser_kind") == "image":
            image_confusers.append(ImageConfuserItem(item["positive"], image, _existing(item["confuser"], item)))
        else:
            composition.append(CompositionItem(str(item.get("review_item", position)), image, item["positive"],
                                               item["confuser"], generator=item.get("benchmark", "")))
    return RegressionBenchmark(CompositionSet("regression", "review", {SUBSET: composition} if composition else {}),
                               image_confusers)


def regression_accuracy(model: str, benchmark: RegressionBenchmark, config: EvalConfig | None = None) -> float:
    """Percent of the regression items `model` (a MODEL spec) gets right."""
    import numpy as np

    from toolkit.adapters.loading import load_model  # torch loads only when a model does (here, not at the top)

    config = config or EvalConfig()
    encoder = Encoder(load_model(model), config)
    flags = []
    if benchmark.composition.subsets:
        scored = score_benchmark("regression", benchmark.composition, encoder, config)
        flags.append(scored.correct[SUBSET]["acc"])
    if benchmark.image_confusers:
        items = benchmark.image_confusers
        texts = encoder.texts([i.text for i in items])
        # The same strict paired comparison, anchored on the text: s(T, image) > s(T, confuser image).
        scored_images = metrics.image_text_accuracy(texts, encoder.images([i.image for i in items]),
                                                    encoder.images([i.confuser_image for i in items]))
        flags.append(scored_images.correct["acc"])
    return metrics.percent(np.concatenate(flags)) if flags else 0.0


def score_model_source(source: str, benchmark: RegressionBenchmark, config: EvalConfig | None = None) -> float:
    """Regression accuracy of a registered model version, from its `source` (the logged model folder's
    artifact URI), downloaded into a temporary folder."""
    import mlflow.artifacts

    from toolkit.adapters.base import ModelLoadError  # torch loads only when a model does (here, not at the top)

    with tempfile.TemporaryDirectory(prefix="toolkit-regression-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp,
                                                        tracking_uri=resolve_tracking_uri())
        except Exception as err:  # MLflow raises its own, OS and HTTP errors alike for a missing artifact
            raise RegressionSetError(f"cannot download the registered model {source}: {err}") from err
        try:
            return regression_accuracy(local, benchmark, config)
        except ModelLoadError as err:
            raise RegressionSetError(f"the registered model {source} cannot be loaded: {err}") from err


@dataclass(frozen=True)
class RegressionScorer:
    """`registry.promote`'s `regression_accuracy`: model source URI -> percent on this regression set."""

    benchmark: RegressionBenchmark
    config: EvalConfig = field(default_factory=EvalConfig)

    def __call__(self, source: str) -> float:
        return score_model_source(source, self.benchmark, self.config)


def regression_scorer(store: Store, config: EvalConfig | None = None) -> RegressionScorer | None:
    """A scorer for today's regression set; None while the set is empty (nothing to gate on)."""
    items = regression_set(store)
    if not items:
        return None
    return RegressionScorer(regression_benchmark(items), config or EvalConfig())
