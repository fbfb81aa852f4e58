"""Score a model on the demo's held-out sets: swap-attribute, two-object retrieval, single-object zero-shot.

The scoring rules are the standard ones (SugarCrepe: s(I, pos) > s(I, neg); SugarCrepe++ ITT: both
positives beat the negative; Recall@k; zero-shot top-1 with template-averaged class embeddings).
The rules themselves are small pure functions on similarity matrices, tested without a model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toolkit.adapters.base import ClipAdapter
from toolkit.demo.generate import paths_under
from toolkit.demo.pretrain import load_images_uint8


def recall_at_k(similarity: np.ndarray, k: int) -> float:
    """Share of rows whose own column (the diagonal) is among the k highest scores of the row."""
    own = np.diag(similarity)[:, None]
    rank = (similarity > own).sum(axis=1)
    return float((rank < k).mean())


def pairwise_accuracy(positive: np.ndarray, negative: np.ndarray) -> float:
    return float((positive > negative).mean())


def top1_accuracy(logits: np.ndarray, labels: Sequence[int]) -> float:
    return float((logits.argmax(axis=1) == np.asarray(labels)).mean())


@torch.no_grad()
def _encode_texts(adapter: ClipAdapter, texts: list[str], batch: int = 512) -> torch.Tensor:
    return torch.cat([adapter.encode_text(adapter.tokenize(texts[i:i + batch]))
                      for i in range(0, len(texts), batch)])


@torch.no_grad()
def _encode_images(adapter: ClipAdapter, folder: Path, paths: list[str], batch: int = 256) -> torch.Tensor:
    norm = adapter.image_norm
    mean = torch.tensor(norm.mean).view(1, 3, 1, 1)
    std = torch.tensor(norm.std).view(1, 3, 1, 1)
    images = load_images_uint8(folder, paths, norm.size)
    return torch.cat([adapter.encode_image((images[i:i + batch].float() / 255.0 - mean) / std)
                      for i in range(0, len(images), batch)])


def evaluate_demo(adapter: ClipAdapter, data: Path) -> dict[str, float]:
    """All demo metrics for `adapter` on the held-out sets under `data` (written by `generate_demo_data`)."""
    adapter.model.eval()
    paths = paths_under(data)
    items: list[dict[str, Any]] = json.loads(paths.swap_att.read_text(encoding="utf-8"))
    folder = paths.swap_att.parent
    image_emb = _encode_images(adapter, folder, [it["filename"] for it in items])
    pos = _encode_texts(adapter, [it["caption"] for it in items])
    pos2 = _encode_texts(adapter, [it["caption2"] for it in items])
    neg = _encode_texts(adapter, [it["negative_caption"] for it in items])
    s_pos = (image_emb * pos).sum(1).numpy()
    s_pos2 = (image_emb * pos2).sum(1).numpy()
    s_neg = (image_emb * neg).sum(1).numpy()
    text_to_image = (pos @ image_emb.T).numpy()

    labels = json.loads(paths.zeroshot_labels.read_text(encoding="utf-8"))
    classnames, templates = labels["classnames"], labels["templates"]
    class_emb = _encode_texts(adapter, [t.format(c) for c in classnames for t in templates])
    class_emb = class_emb.view(len(classnames), len(templates), -1).mean(1)
    class_emb = class_emb / class_emb.norm(dim=-1, keepdim=True)
    zs_images = _encode_images(adapter, paths.zeroshot_labels.parent, [im["path"] for im in labels["images"]])
    zs_logits = (zs_images @ class_emb.T).numpy()

    return {
        "swap_att_accuracy": pairwise_accuracy(s_pos, s_neg),
        "swap_att_itt": float(((s_pos > s_neg) & (s_pos2 > s_neg)).mean()),
        "two_object_t2i_r1": recall_at_k(text_to_image, 1),
        "two_object_t2i_r5": recall_at_k(text_to_image, 5),
        "two_object_i2t_r5": recall_at_k(text_to_image.T, 5),
        "zeroshot_top1": top1_accuracy(zs_logits, [im["label"] for im in labels["images"]]),
    }
