"""Metrics on hand-built embeddings: every expected value below is worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toolkit.eval import metrics

# Unit vectors in 3-D whose cosines are easy to read off.
X = [1.0, 0.0, 0.0]
Y = [0.0, 1.0, 0.0]
Z = [0.0, 0.0, 1.0]
XY = [1.0, 1.0, 0.0]  # cos 0.707 to X and to Y


def test_sugarcrepe_pp_needs_both_positives_above_the_negative() -> None:
    image = [X, X, X]
    # item 0: P1 = X (1.0), P2 = XY (0.707), N = Y (0.0)        -> ITT right
    # item 1: P1 = X (1.0), P2 = Y (0.0),   N = XY (0.707)     -> ITT wrong: only one positive beats N
    # item 2: P1 = XY, P2 = XY, N = XY: all tied                 -> ITT wrong (ties are wrong)
    p1 = [X, X, XY]
    p2 = [XY, Y, XY]
    neg = [Y, XY, XY]
    scored = metrics.sugarcrepe_pp(image, p1, p2, neg)
    assert scored.correct["itt"].tolist() == [True, False, False]
    assert scored.metrics["itt"] == pytest.approx(100 / 3)
    # TOT: item 0: s(P1,P2)=.707 > s(P1,N)=0 and > s(P2,N)=.707? no, tie -> wrong
    #      item 1: s(P1,P2)=0 > s(P1,N)=.707? no -> wrong
    #      item 2: all tied -> wrong
    assert scored.correct["tot"].tolist() == [False, False, False]
    assert scored.metrics["tot"] == 0.0


def test_tot_needs_the_paraphrases_closer_than_either_is_to_the_negative() -> None:
    p1, p2 = [[1.0, 0.1, 0.0]], [[1.0, 0.0, 0.1]]
    assert metrics.sugarcrepe_pp([X], p1, p2, [Z]).correct["tot"].tolist() == [True]
    # The negative close to P2 (closer than P1 is) breaks the second condition only.
    assert metrics.sugarcrepe_pp([X], p1, p2, [[1.0, 0.0, 0.11]]).correct["tot"].tolist() == [False]


def test_image_text_accuracy_is_strict_and_scale_free() -> None:
    # Unnormalised inputs: 5*X and X are the same direction, so item 1 is a tie and counts as wrong.
    scored = metrics.image_text_accuracy([X, X, X], [[5.0, 0, 0], X, Y], [Y, [2.0, 0, 0], X])
    assert scored.correct["acc"].tolist() == [True, False, False]
    assert scored.metrics["acc"] == pytest.approx(100 / 3)


def test_retrieval_with_several_captions_per_image() -> None:
    images = np.array([X, Y, Z])
    # texts 0,1 describe image 0; text 2 image 1; text 3 image 2.
    texts = np.array([
        [1.0, 0.0, 0.0],   # t0 -> image 0 first: rank 1
        [0.0, 1.0, 0.2],   # t1 (image 0) is closest to image 1, then image 2, then 0: rank 3
        [0.0, 1.0, 0.0],   # t2 -> image 1: rank 1
        [0.9, 0.0, 0.5],   # t3 (image 2) ranks image 0 first, image 2 second: rank 2
    ])
    scores = metrics.retrieval(images, texts, [0, 0, 1, 2])
    assert scores.text_ranks.tolist() == [1, 3, 1, 2]
    assert scores.text_to_image.correct["r1"].tolist() == [True, False, True, False]
    assert scores.text_to_image.metrics == {"r1": 50.0, "r5": 100.0, "r10": 100.0}
    # With 3 images R@5 is 100 by construction; R@2 and R@3 tell the ranks apart.
    assert metrics.retrieval(images, texts, [0, 0, 1, 2], ks=(2, 3)).text_to_image.metrics == {"r2": 75.0,
                                                                                               "r3": 100.0}
    # image 0: its best caption t0 (1.0) beats every other text -> rank 1 (t1 being low does not matter)
    # image 1: t2 (1.0) is best -> rank 1.  image 2: own t3 = .486; t1 = .196 below it -> rank 1
    assert scores.image_ranks.tolist() == [1, 1, 1]
    # With k=1 only, a text that ties its right image with a wrong one is ranked below it.
    tied = metrics.retrieval([X, Y], [XY, Y], [0, 1], ks=(1,))
    assert tied.text_ranks.tolist() == [2, 1]
    assert tied.text_to_image.metrics == {"r1": 50.0}
    # image 0: own caption XY (.707) vs wrong caption Y (0): rank 1. image 1: own Y (1.0) best: rank 1.
    assert tied.image_ranks.tolist() == [1, 1]


def test_image_to_text_counts_a_tie_with_a_wrong_caption_against_the_image() -> None:
    # image 0's only caption ties with image 1's caption: pessimistic rank 2.
    scores = metrics.retrieval([X, Y], [XY, XY], [0, 1], ks=(1, 2))
    assert scores.image_ranks.tolist() == [2, 2]
    assert scores.image_to_text.metrics == {"r1": 0.0, "r2": 100.0}


def test_blocked_retrieval_ranks_equal_the_full_matrix_ranks() -> None:
    """The blocked path (what `toolkit eval` runs) against the full cosine matrix, with ties and several
    captions per image, at block sizes that do not divide the counts."""
    rng = np.random.default_rng(0)
    images = rng.integers(-2, 3, size=(7, 4)).astype(float)  # small integers: exact ties happen
    images[3] = images[1]  # two identical images
    images[images.sum(axis=1) == 0, 0] = 1.0
    text_image = np.array([0, 0, 1, 2, 3, 3, 4, 5, 6, 6, 6, 1])
    texts = images[text_image] + rng.integers(-1, 2, size=(12, 4))
    texts[texts.sum(axis=1) == 0, 1] = 1.0
    texts[5] = texts[2]  # a caption of image 3 identical to one of image 1
    full = metrics.retrieval_from_similarities(metrics.cosine_matrix(texts, images), text_image)
    for block in (1, 3, 5, 1024):
        blocked = metrics.retrieval(images, texts, text_image, block=block)
        assert blocked.text_ranks.tolist() == full.text_ranks.tolist(), block
        assert blocked.image_ranks.tolist() == full.image_ranks.tolist(), block
    assert len(set(full.text_ranks.tolist())) > 1 and full.image_ranks.max() > 1  # not all trivially first


def test_retrieval_rejects_an_image_without_captions() -> None:
    with pytest.raises(ValueError, match="image 1 has no caption"):
        metrics.retrieval([X, Y], [X], [0])


def test_winoground_text_image_group() -> None:
    # example 0: perfect match.  example 1: both captions prefer image 0 (image score fails, text holds?)
    i0 = [X, X]
    i1 = [Y, [0.8, 0.6, 0.0]]
    c0 = [X, X]
    c1 = [Y, [0.6, 0.8, 0.0]]
    # example 1: c0_i0=1, c1_i0=.6, c1_i1=.96, c0_i1=.8 -> text: 1>.6 and .96>.8 -> right
    #            image: c0_i0=1 > c0_i1=.8 and c1_i1=.96 > c1_i0=.6 -> right
    scored = metrics.winoground(i0, i1, c0, c1)
    assert scored.correct["group"].tolist() == [True, True]
    # Now make caption 1 prefer image 0 over image 1 -> image score wrong, text score still right.
    c1_bad = [Y, [0.95, 0.31, 0.0]]
    # c1_i0=.95, c1_i1=.946 -> image: c1_i1 > c1_i0? no.  text: c0_i0=1 > c1_i0=.95 and c1_i1=.946 > c0_i1=.8
    scored = metrics.winoground(i0, i1, c0, c1_bad)
    assert scored.correct["text"].tolist() == [True, True]
    assert scored.correct["image"].tolist() == [True, False]
    assert scored.correct["group"].tolist() == [True, False]
    assert scored.metrics == {"text": 100.0, "image": 50.0, "group": 50.0}


def test_zero_shot_top1_with_template_ensembling_and_ties() -> None:
    # two classes, two templates each; class 0 averages to X, class 1 to Y.
    templates = [[[1.0, 0.2, 0.0], [1.0, -0.2, 0.0]], [[0.2, 1.0, 0.0], [-0.2, 1.0, 0.0]]]
    classes = metrics.class_embeddings(templates)
    np.testing.assert_allclose(classes, [X, Y], atol=1e-12)
    scored, predicted = metrics.zero_shot_top1([X, Y, XY, X], classes, [0, 0, 1, 1])
    # image 2 (XY) ties the two classes -> wrong, reported prediction is the other class (0).
    assert scored.correct["top1"].tolist() == [True, False, False, False]
    assert predicted.tolist() == [0, 1, 0, 0]
    assert scored.metrics["top1"] == 25.0


@pytest.mark.parametrize("bad", [np.zeros((0, 3)), np.zeros(3), [[np.nan, 1.0, 0.0]], [[0.0, 0.0, 0.0]]])
def test_bad_embeddings_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        metrics.image_text_accuracy(bad, [X], [Y])  # type: ignore[arg-type]


def test_shape_mismatch_names_the_inputs() -> None:
    with pytest.raises(ValueError, match=r"image .* and positive .* must have the same shape"):
        metrics.image_text_accuracy([X, Y], [X], [Y, X])


def test_paired_difference_by_hand() -> None:
    before = np.array([True, True, True, False, False, True, False, True])
    after = np.array([True, False, True, True, True, True, False, False])
    diff = metrics.paired_difference(before, after)
    # lost: items 1 and 7; won: items 3 and 4 -> no change, yet two disagreements each way.
    assert (diff.lost, diff.won, diff.items, diff.delta) == (2, 2, 8, 0.0)
    assert diff.standard_error == pytest.approx(100 * math.sqrt(4 - 0 / 8) / 8)
    one_way = metrics.paired_difference([True] * 4, [True, False, False, True])
    assert one_way.delta == -50.0 and one_way.standard_error == pytest.approx(100 * math.sqrt(2 - 4 / 4) / 4)
    assert metrics.paired_difference([True, False], [True, False]).standard_error == 0.0
    with pytest.raises(ValueError, match="equally long"):
        metrics.paired_difference([True], [True, False])
