"""The CLIC and CLIP losses against values worked out by hand (plain math, no torch in the expectation)."""

from __future__ import annotations

import math

import pytest
import torch

from toolkit.train.loss import ClicLoss, ClicLossWeights, ClipLoss, hard_negative_accuracy

# Two images and 2-D unit embeddings given as angles (degrees): similarity = cos(a - b).
IMAGES = [0.0, 90.0]
TEXTS = {  # [text for image 1, text for image 2] per block, in batch order p1 | p2 | p3 | p4 | n
    "p1": [0.0, 90.0],
    "p2": [30.0, 60.0],
    "p3": [0.0, 180.0],
    "p4": [90.0, 0.0],
    "n": [45.0, 45.0],
}
SCALE = 2.0


def unit(angle: float) -> list[float]:
    return [math.cos(math.radians(angle)), math.sin(math.radians(angle))]


def sim(a: float, b: float) -> float:
    return SCALE * math.cos(math.radians(a - b))


def cross_entropy(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


def expected_terms() -> dict[str, float]:
    cont, sneg = [], []
    for name in ("p1", "p2", "p3", "p4"):
        texts = TEXTS[name]
        i2t = sum(cross_entropy([sim(img, t) for t in texts], j) for j, img in enumerate(IMAGES)) / 2
        t2i = sum(cross_entropy([sim(t, img) for img in IMAGES], j) for j, t in enumerate(texts)) / 2
        cont.append((i2t + t2i) / 2)
        sneg.append(sum(cross_entropy([sim(img, texts[j]), sim(img, TEXTS["n"][j])], 0)
                        for j, img in enumerate(IMAGES)) / 2)
    pairs = zip(TEXTS["p1"], TEXTS["p2"], strict=True)
    uni = sum(2 - 2 * math.cos(math.radians(a - b)) for a, b in pairs) / 2
    return {"cont": sum(cont) / 4, "sneg": sum(sneg) / 4, "uni": uni}


def features() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images = torch.tensor([unit(a) for a in IMAGES], dtype=torch.float64)
    texts = torch.tensor([unit(a) for block in TEXTS.values() for a in block], dtype=torch.float64)
    return images, texts, torch.tensor(math.log(SCALE), dtype=torch.float64)


def test_closed_forms_of_the_worked_example() -> None:
    # p1 matches both images exactly, so its image->text row for image 1 is [2, 0]: CE = log(1 + e^-2).
    assert cross_entropy([sim(0, 0), sim(0, 90)], 0) == pytest.approx(math.log(1 + math.exp(-2)))
    # p1 and p2 are 30 degrees apart for both images: |a - b|^2 = 2 - 2 cos 30° = 2 - √3.
    assert expected_terms()["uni"] == pytest.approx(2 - math.sqrt(3))


def test_clic_terms_match_hand_computation() -> None:
    images, texts, logit_scale = features()
    total, terms = ClicLoss()(images, texts, logit_scale)
    expected = expected_terms()
    for name in ("cont", "sneg", "uni"):
        assert terms[name].item() == pytest.approx(expected[name], rel=1e-9), name
    weighted = 0.5 * expected["cont"] + 0.5 * expected["sneg"] + 1.0 * expected["uni"]
    assert total.item() == pytest.approx(weighted, rel=1e-9)


def test_terms_can_be_switched_off_and_reweighted() -> None:
    images, texts, logit_scale = features()
    expected = expected_terms()
    only_cont = ClicLoss(ClicLossWeights(cont=2.0, use_sneg=False, use_uni=False))
    total, terms = only_cont(images, texts, logit_scale)
    assert set(terms) == {"cont"}
    assert total.item() == pytest.approx(2.0 * expected["cont"], rel=1e-9)
    with pytest.raises(ValueError, match="at least one"):
        ClicLossWeights(use_cont=False, use_sneg=False, use_uni=False)


def test_hard_negative_accuracy_counts_positives_closer_than_their_negative() -> None:
    images, texts, _ = features()
    beaten = [sim(img, TEXTS[name][j]) > sim(img, TEXTS["n"][j])
              for name in ("p1", "p2", "p3", "p4") for j, img in enumerate(IMAGES)]
    # p4 loses for both images and p3 for the second (90 degrees off against the negative's 45): 5 of 8.
    assert sum(beaten) == 5
    assert hard_negative_accuracy(images, texts).item() == pytest.approx(5 / 8)
    # The negative moved onto the images themselves: no positive is strictly closer.
    on_images = texts.clone()
    on_images[8:] = images
    assert hard_negative_accuracy(images, on_images).item() == 0.0


def test_clic_rejects_wrong_layout() -> None:
    images, texts, logit_scale = features()
    with pytest.raises(ValueError, match="expects 5·B = 10 texts"):
        ClicLoss()(images, texts[:8], logit_scale)


def test_clip_loss_matches_hand_computation() -> None:
    images, texts, logit_scale = features()
    first = texts[2:4]  # p2 block
    total, terms = ClipLoss()(images, first, logit_scale)
    p2 = TEXTS["p2"]
    i2t = sum(cross_entropy([sim(img, t) for t in p2], j) for j, img in enumerate(IMAGES)) / 2
    t2i = sum(cross_entropy([sim(t, img) for img in IMAGES], j) for j, t in enumerate(p2)) / 2
    assert total.item() == pytest.approx((i2t + t2i) / 2, rel=1e-9)
    assert terms["clip"] is total


def test_gradient_reaches_logit_scale_and_texts() -> None:
    images, texts, _ = features()
    texts.requires_grad_(True)
    logit_scale = torch.tensor(math.log(SCALE), dtype=torch.float64, requires_grad=True)
    total, _ = ClicLoss()(images, texts, logit_scale)
    total.backward()
    assert logit_scale.grad is not None and logit_scale.grad.item() != 0.0
    assert texts.grad is not None and texts.grad.abs().sum().item() > 0.0
