"""Evaluation metrics: pure NumPy on embeddings. No torch, no I/O.

Conventions shared by every function here:
- `s(a, b)` is cosine similarity. Inputs are normalised to unit length here, so embeddings from any
  source (normalised or not) give the same answer.
- Every comparison is strict (`>`): a tie between the right answer and a confuser counts as WRONG.
  A model that maps a caption and its negative to the same embedding has not understood the
  difference, and must not be credited half the time by floating-point luck.
- Retrieval ranks are pessimistic for the same reason: a wrong candidate that ties with the right one
  is ranked above it.
- Aggregates are percentages (0–100), as the papers report them. Each function also returns the
  per-item correctness (a boolean array per metric) so the failures can be listed for review.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True)
class Scored:
    """Aggregate metrics (percent) and, under the same names, which items were correct."""

    metrics: dict[str, float]
    correct: dict[str, BoolArray]


def _matrix(values: ArrayLike, name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D array [items, dim], got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return array


def normalise(values: ArrayLike, name: str = "embeddings") -> FloatArray:
    """Rows scaled to unit L2 norm. A zero row is an error: it has no direction to compare."""
    array = _matrix(values, name)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"{name}: row {int(np.argmin(norms[:, 0]))} is all zeros")
    result: FloatArray = array / norms
    return result


def paired_cosine(a: ArrayLike, b: ArrayLike, names: tuple[str, str] = ("a", "b")) -> FloatArray:
    """s(a_i, b_i) for each row i of two equally long arrays."""
    left, right = normalise(a, names[0]), normalise(b, names[1])
    if left.shape != right.shape:
        raise ValueError(f"{names[0]} {left.shape} and {names[1]} {right.shape} must have the same shape")
    result: FloatArray = np.einsum("nd,nd->n", left, right)
    return result


def cosine_matrix(a: ArrayLike, b: ArrayLike, names: tuple[str, str] = ("a", "b")) -> FloatArray:
    """s(a_i, b_j) for all pairs: shape [len(a), len(b)]."""
    left, right = normalise(a, names[0]), normalise(b, names[1])
    if left.shape[1] != right.shape[1]:
        raise ValueError(f"{names[0]} and {names[1]} have different dimensions "
                         f"({left.shape[1]} vs {right.shape[1]})")
    result: FloatArray = left @ right.T
    return result


def percent(correct: BoolArray) -> float:
    return float(100.0 * np.mean(correct)) if correct.size else 0.0


def _scored(correct: dict[str, BoolArray]) -> Scored:
    return Scored({name: percent(flags) for name, flags in correct.items()}, correct)


@dataclass(frozen=True)
class PairedDifference:
    """`after` minus `before` on the same items, in points, with the standard error of that difference."""

    delta: float
    standard_error: float
    items: int
    lost: int  # right before, wrong after
    won: int  # wrong before, right after


def paired_difference(before: ArrayLike, after: ArrayLike) -> PairedDifference:
    """Two models' per-item results on the same items. Only the items on which they disagree move the
    difference, so its standard error is sqrt(lost + won - (won - lost)² / n) / n: with 400 zero-shot
    images and 35 disagreements it is about 1.5 points, larger than a 1-point tolerance."""
    old, new = np.asarray(before, dtype=bool), np.asarray(after, dtype=bool)
    if old.shape != new.shape or old.ndim != 1 or old.size == 0:
        raise ValueError(f"paired_difference needs two equally long, non-empty 1-D flag arrays, got "
                         f"{old.shape} and {new.shape}")
    n = old.size
    lost, won = int(np.sum(old & ~new)), int(np.sum(~old & new))
    variance = max(0.0, lost + won - (won - lost) ** 2 / n)
    return PairedDifference(100.0 * (won - lost) / n, 100.0 * float(np.sqrt(variance)) / n, n, lost, won)


def sugarcrepe_pp(image: ArrayLike, positive1: ArrayLike, positive2: ArrayLike,
                  negative: ArrayLike) -> Scored:
    """SugarCrepe++ ITT and TOT, row i being one item.

    ITT: correct iff s(I,P1) > s(I,N) and s(I,P2) > s(I,N): BOTH positives must beat the negative.
    TOT: correct iff s(P1,P2) > s(P1,N) and s(P1,P2) > s(P2,N): the two paraphrases are closer to
    each other than either is to the negative.
    """
    i_p1 = paired_cosine(image, positive1, ("image", "positive1"))
    i_p2 = paired_cosine(image, positive2, ("image", "positive2"))
    i_n = paired_cosine(image, negative, ("image", "negative"))
    p1_p2 = paired_cosine(positive1, positive2, ("positive1", "positive2"))
    p1_n = paired_cosine(positive1, negative, ("positive1", "negative"))
    p2_n = paired_cosine(positive2, negative, ("positive2", "negative"))
    itt = (i_p1 > i_n) & (i_p2 > i_n)
    tot = (p1_p2 > p1_n) & (p1_p2 > p2_n)
    return _scored({"itt": itt, "tot": tot})


def image_text_accuracy(image: ArrayLike, positive: ArrayLike, negative: ArrayLike) -> Scored:
    """SugarCrepe (and domain sets): correct iff s(I,pos) > s(I,neg). Metric name: `acc`."""
    pos = paired_cosine(image, positive, ("image", "positive"))
    neg = paired_cosine(image, negative, ("image", "negative"))
    return _scored({"acc": pos > neg})


def _check_text_images(text_image: ArrayLike, n_texts: int, n_images: int) -> NDArray[np.int64]:
    index = np.asarray(text_image)
    if index.shape != (n_texts,) or not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"text_image must be one integer image index per text ({n_texts}), "
                         f"got shape {index.shape} dtype {index.dtype}")
    if n_texts and (index.min() < 0 or index.max() >= n_images):
        raise ValueError(f"text_image holds indices outside 0..{n_images - 1}")
    missing = np.setdiff1d(np.arange(n_images), index)
    if missing.size:
        raise ValueError(f"image {int(missing[0])} has no caption; every image needs at least one")
    return index.astype(np.int64)


@dataclass(frozen=True)
class RetrievalScores:
    text_to_image: Scored  # one row per text
    image_to_text: Scored  # one row per image
    # Rank (1 = best) of the right answer per query, pessimistic on ties: for review and R@k checks.
    text_ranks: NDArray[np.int64]
    image_ranks: NDArray[np.int64]


# Similarity rows (texts) per block; columns (images, all texts tall) go `RETRIEVAL_BLOCK // 4` at a time.
RETRIEVAL_BLOCK = 1024


def retrieval(images: ArrayLike, texts: ArrayLike, text_image: ArrayLike,
              ks: tuple[int, ...] = (1, 5, 10), block: int = RETRIEVAL_BLOCK) -> RetrievalScores:
    """Text→image and image→text recall@k from embeddings, as `retrieval_from_similarities` on their
    cosine matrix, whose blocks are computed on demand: COCO's 25k × 5k matrix (1 GB in float64) never
    exists whole."""
    text_rows, image_rows = normalise(texts, "texts"), normalise(images, "images")
    if text_rows.shape[1] != image_rows.shape[1]:
        raise ValueError(f"texts and images have different dimensions "
                         f"({text_rows.shape[1]} vs {image_rows.shape[1]})")
    index = _check_text_images(text_image, len(text_rows), len(image_rows))
    text_ranks, image_ranks = _blocked_ranks(lambda a, b: text_rows[a:b] @ image_rows.T,
                                             lambda a, b: text_rows @ image_rows[a:b].T,
                                             index, len(image_rows), block)
    return _retrieval_scores(text_ranks, image_ranks, ks)


def retrieval_from_similarities(sims: ArrayLike, text_image: ArrayLike,
                                ks: tuple[int, ...] = (1, 5, 10)) -> RetrievalScores:
    """Recall@k with several captions per image, from `sims[text, image]`.

    `text_image[t]` is the index of text t's image. A text is correct at k if its image is among the
    k best images. An image is correct at k if ANY of its captions is among the k best texts, i.e. the
    best-ranked of its captions counts. Ranks are pessimistic: a wrong candidate scoring equal to or
    above the right one is ranked above it; the image's other captions never count against it.
    """
    matrix = _matrix(sims, "similarities")
    n_texts, n_images = matrix.shape
    index = _check_text_images(text_image, n_texts, n_images)
    text_ranks, image_ranks = _blocked_ranks(lambda a, b: matrix[a:b], lambda a, b: matrix[:, a:b],
                                             index, n_images)
    return _retrieval_scores(text_ranks, image_ranks, ks)


def _blocked_ranks(text_block: Callable[[int, int], FloatArray], image_block: Callable[[int, int], FloatArray],
                   index: NDArray[np.int64], n_images: int, block: int = RETRIEVAL_BLOCK
                   ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Pessimistic ranks of the right answers, `block` texts (rows) or `block // 4` images (columns, all
    texts tall) at a time. `text_block(a, b)` is sims[a:b], `image_block(a, b)` is sims[:, a:b]."""
    n_texts = len(index)
    text_ranks = np.empty(n_texts, dtype=np.int64)
    for start in range(0, n_texts, block):
        sims = text_block(start, start + block)
        right = sims[np.arange(len(sims)), index[start:start + block]]
        # Counting candidates >= the right one counts the right one itself once: that count IS the rank.
        text_ranks[start:start + block] = np.sum(sims >= right[:, None], axis=1)
    image_ranks = np.empty(n_images, dtype=np.int64)
    columns = max(1, block // 4)
    for start in range(0, n_images, columns):
        sims = image_block(start, start + columns)
        own = index[:, None] == np.arange(start, start + sims.shape[1])[None, :]
        best_own = np.where(own, sims, -np.inf).max(axis=0)  # each image's best-ranked caption counts
        image_ranks[start:start + columns] = 1 + np.sum(~own & (sims >= best_own[None, :]), axis=0)
    return text_ranks, image_ranks


def _retrieval_scores(text_ranks: NDArray[np.int64], image_ranks: NDArray[np.int64],
                      ks: tuple[int, ...]) -> RetrievalScores:
    def at_k(ranks: NDArray[np.int64]) -> dict[str, BoolArray]:
        return {f"r{k}": ranks <= k for k in ks}

    return RetrievalScores(_scored(at_k(text_ranks)), _scored(at_k(image_ranks)), text_ranks, image_ranks)


def winoground(image0: ArrayLike, image1: ArrayLike, caption0: ArrayLike, caption1: ArrayLike) -> Scored:
    """Winoground text, image and group scores (Thrush et al. 2022), row i being one example.

    text:  s(c0,i0) > s(c1,i0) and s(c1,i1) > s(c0,i1)   (for each image, its caption wins)
    image: s(c0,i0) > s(c0,i1) and s(c1,i1) > s(c1,i0)   (for each caption, its image wins)
    group: text and image both correct.
    """
    c0_i0 = paired_cosine(caption0, image0, ("caption0", "image0"))
    c0_i1 = paired_cosine(caption0, image1, ("caption0", "image1"))
    c1_i0 = paired_cosine(caption1, image0, ("caption1", "image0"))
    c1_i1 = paired_cosine(caption1, image1, ("caption1", "image1"))
    text = (c0_i0 > c1_i0) & (c1_i1 > c0_i1)
    image = (c0_i0 > c0_i1) & (c1_i1 > c1_i0)
    return _scored({"text": text, "image": image, "group": text & image})


def class_embeddings(template_embeddings: ArrayLike) -> FloatArray:
    """[classes, templates, dim] → [classes, dim]: the mean of the normalised template embeddings,
    renormalised (CLIP's prompt ensembling)."""
    array = np.asarray(template_embeddings, dtype=np.float64)
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(f"template embeddings: expected [classes, templates, dim], got {array.shape}")
    flat = normalise(array.reshape(-1, array.shape[2]), "template embeddings")
    return normalise(flat.reshape(array.shape).mean(axis=1), "class embeddings")


def zero_shot_top1(images: ArrayLike, classes: ArrayLike,
                   labels: ArrayLike) -> tuple[Scored, NDArray[np.int64]]:
    """Top-1 accuracy (`top1`) and the predicted class per image.

    Correct iff the true class scores strictly above every other class (a tie is wrong). For a wrong
    item the prediction reported is the best-scoring OTHER class (lowest index on ties).
    """
    sims = cosine_matrix(images, classes, ("images", "classes"))
    label_array = np.asarray(labels)
    if label_array.shape != (sims.shape[0],) or not np.issubdtype(label_array.dtype, np.integer):
        raise ValueError(f"labels must be one integer class index per image ({sims.shape[0]}), "
                         f"got shape {label_array.shape}")
    if label_array.min() < 0 or label_array.max() >= sims.shape[1]:
        raise ValueError(f"labels hold class indices outside 0..{sims.shape[1] - 1}")
    rows = np.arange(sims.shape[0])
    right = sims[rows, label_array]
    others = sims.copy()
    others[rows, label_array] = -np.inf
    correct = right > others.max(axis=1) if sims.shape[1] > 1 else np.ones(sims.shape[0], dtype=bool)
    predicted = np.where(correct, label_array, np.argmax(others, axis=1)).astype(np.int64)
    return _scored({"top1": correct}), predicted
