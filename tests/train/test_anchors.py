"""Anchor texts (toolkit.train.anchors) and the anchor term: mining, file reading, sampling, loss, training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.helpers import RecordingTracker, run_tiny_training, snapshot_train_catalog, tagged, tiny_train_config
from toolkit.train.anchors import (
    NOUN_PHRASES,
    AnchorError,
    anchor_digest,
    anchor_sample,
    noun_phrases,
    read_anchor_file,
    resolve_anchor_texts,
)
from toolkit.train.config import ConfigError, TrainConfig
from toolkit.train.loss import anchor_loss


def test_noun_phrases_from_stored_tags() -> None:
    sentences = [
        tagged("a large red circle to the left of two blue squares .",
               "DET ADJ ADJ NOUN ADP DET NOUN ADP NUM ADJ NOUN PUNCT"),
        tagged("the circle is red .", "DET NOUN AUX ADJ PUNCT"),  # "red" after the verb: no noun, no phrase
        tagged("Green Hexagon icon", "PROPN PROPN NOUN"),
        tagged("the red .", "DET ADJ PUNCT"),  # no head noun
        tagged("A large red circle .", "DET ADJ ADJ NOUN PUNCT"),  # the same phrase again, other case
    ]
    assert noun_phrases(sentences) == ["a large red circle", "green hexagon icon", "the circle", "the left",
                                       "two blue squares"]
    assert noun_phrases([tagged("red big", "ADJ ADJ")]) == []


def test_anchor_file_skips_blanks_and_repeats_and_refuses_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "anchors.txt"
    path.write_bytes("a photo of a dog.\n\n  a red circle.  \r\na photo of a dog.\ncafé au lait\n".encode())
    assert read_anchor_file(path) == ["a photo of a dog.", "a red circle.", "café au lait"]

    path.write_bytes(b"fine\n\xff\xfebroken\n")
    with pytest.raises(AnchorError, match=r"line 2: not UTF-8"):
        read_anchor_file(path)
    path.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(AnchorError, match="holds no anchor text"):
        read_anchor_file(path)
    with pytest.raises(AnchorError, match="cannot read"):
        read_anchor_file(tmp_path / "missing.txt")


def test_resolve_mines_or_reads(tmp_path: Path) -> None:
    sentences = [tagged("a red circle .", "DET ADJ NOUN PUNCT")]
    assert resolve_anchor_texts(NOUN_PHRASES, sentences) == ["a red circle"]
    with pytest.raises(AnchorError, match="no tagged noun phrase"):
        resolve_anchor_texts(NOUN_PHRASES, [tagged("words without tags", "X X X")])
    (tmp_path / "a.txt").write_text("one\ntwo\n", encoding="utf-8")
    assert resolve_anchor_texts(str(tmp_path / "a.txt"), sentences) == ["one", "two"]
    assert anchor_digest(["one", "two"]) != anchor_digest(["two", "one"])


def test_anchor_sample_is_reproducible_and_shared_out_over_ranks() -> None:
    draw = anchor_sample(100, 10, seed=3, draw=5)
    assert draw == anchor_sample(100, 10, seed=3, draw=5) and len(set(draw)) == 10
    assert draw != anchor_sample(100, 10, seed=3, draw=6)
    assert sorted(anchor_sample(4, 10, seed=3, draw=5)) == [0, 1, 2, 3]  # fewer anchors than per step: all
    shares = [anchor_sample(100, 10, seed=3, draw=5, rank=r, world_size=3) for r in range(3)]
    assert sorted(i for share in shares for i in share) == sorted(draw)


def test_anchor_loss_by_hand() -> None:
    trained = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    base = torch.tensor([[1.0, 0.0], [math.cos(math.radians(60)), math.sin(math.radians(60))]])
    # Row 0 has not moved; row 1 moved by 30 degrees: |a - b|^2 = 2 - 2 cos 30.
    expected = (0.0 + 2 - 2 * math.cos(math.radians(30))) / 2
    assert anchor_loss(trained, base).item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        anchor_loss(trained, base[:1])


def test_config_checks_and_paths_beside_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "train.toml"
    path.write_text('anchor_weight = 2\nanchor_texts = "prompts.txt"\n', encoding="utf-8")
    config = TrainConfig.from_file(path)
    assert config.anchor_weight == 2.0 and config.anchor_texts == str(tmp_path / "cfg" / "prompts.txt")
    path.write_text("anchor_weight = 1\n", encoding="utf-8")
    assert TrainConfig.from_file(path).anchor_texts == NOUN_PHRASES
    with pytest.raises(ConfigError, match="anchor_weight must be >= 0"):
        TrainConfig(anchor_weight=-1.0)
    with pytest.raises(ConfigError, match="anchor_batch must be >= 1"):
        TrainConfig(anchor_batch=0)


def test_fingerprint_reads_an_anchor_file_by_content_not_path(tmp_path: Path) -> None:
    here, there = tmp_path / "a" / "prompts.txt", tmp_path / "b" / "prompts.txt"
    for path in (here, there):
        path.parent.mkdir()
        path.write_text("a photo of a dog.\na red circle.\n", encoding="utf-8")
    anchored = TrainConfig(anchor_weight=2.0, anchor_texts=str(here))
    # A copied config and anchor file elsewhere is the same run (the demo reuses it)...
    assert TrainConfig(anchor_weight=2.0, anchor_texts=str(there)).fingerprint() == anchored.fingerprint()
    # ...an edited anchor file is another run, never a stale reuse.
    there.write_text("a photo of a dog.\na blue circle.\n", encoding="utf-8")
    assert TrainConfig(anchor_weight=2.0, anchor_texts=str(there)).fingerprint() != anchored.fingerprint()
    # With anchors off, their file and batch shape nothing.
    assert TrainConfig(anchor_texts=str(there), anchor_batch=7).fingerprint() == TrainConfig().fingerprint()
    assert TrainConfig(anchor_weight=2.0).fingerprint() != TrainConfig().fingerprint()
    with pytest.raises(ConfigError, match=r"anchor_texts file .*missing\.txt cannot be read"):
        TrainConfig(anchor_weight=2.0, anchor_texts=str(tmp_path / "missing.txt")).fingerprint()


def test_demo_reference_captions_are_reproduced_by_their_generator() -> None:
    from toolkit.demo.chain import DEMO_TRAIN_CONFIG
    from toolkit.demo.generate import reference_captions

    # Beside the demo's config, for `anchor_texts = "reference-captions.txt"` (the demo trains without anchors
    # on its two-stage base; bench/ablation_demo.py's anchored row reads them).
    committed = DEMO_TRAIN_CONFIG.parent / "reference-captions.txt"
    assert read_anchor_file(committed) == reference_captions()
    # General captions of single objects, never the demo's two-object compositions.
    assert all(" and " not in text for text in reference_captions())


# ---- in training ---------------------------------------------------------------------------------

ANCHORS = ["a photo of a dog.", "a red circle.", "the blue square.", "a drawing of a tree.",
           "a small green star.", "a cat on a sofa."]


def _drift(adapter: object, base: object) -> float:
    with torch.no_grad():
        tokens = base.tokenize(ANCHORS)  # type: ignore[attr-defined]
        return anchor_loss(adapter.encode_text(tokens), base.encode_text(tokens)).item()  # type: ignore[attr-defined]


def test_anchors_hold_their_texts_near_the_base(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    from toolkit.adapters.loading import load_model
    from toolkit.data.batches import SyntheticBatchSource
    from toolkit.train.recipe import run_training

    torch.set_num_threads(1)
    base = load_model(tiny_open_clip_spec)
    drift = {}
    for weight in (0.0, 20.0):
        adapter = load_model(tiny_open_clip_spec)
        source = SyntheticBatchSource(16, 4, 32, adapter.tokenize, seed=1)
        tracker = RecordingTracker()
        config = tiny_train_config(max_steps=6, lr=5e-3, log_every=1, anchor_weight=weight, anchor_batch=4)
        run_training(config, adapter, source, tmp_path / f"w{weight:g}", tracker=tracker, anchor_texts=ANCHORS)
        drift[weight] = _drift(adapter, base)
        logged = {k for _, metrics in tracker.metrics for k in metrics}
        assert ({"clic/anchor", "plain/anchor"} <= logged) == (weight > 0)
    assert drift[0.0] > 0 and drift[20.0] < 0.5 * drift[0.0], drift

    with pytest.raises(ValueError, match="needs anchor texts"):
        run_training(tiny_train_config(anchor_weight=1.0), load_model(tiny_open_clip_spec),
                     SyntheticBatchSource(8, 4, 32, base.tokenize), tmp_path / "none")


def test_catalog_run_records_its_anchors(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    from toolkit.train.job import train_on_snapshot

    (tmp_path / "imgs").mkdir()
    url = f"sqlite:///{tmp_path / 'c.db'}"
    snapshot_train_catalog(url, tmp_path / "imgs")
    config = TrainConfig(epochs=2, batch_size=4, lr=1e-2, min_lr=1e-4, anchor_weight=1.0, progress=False)
    result = train_on_snapshot(tiny_open_clip_spec, "latest", tmp_path / "run", config, url, track=False)
    assert result.global_step == 2 and result.last_metrics["plain/anchor"] > 0  # the base moved on step 1
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    anchors = card["anchors"]
    expected = sorted(["a man", "a black hat", "a water feature", "a garden", "plants", "a red cube",
                       "a blue ball", "a tall tower", "a river", "boats"])  # the fixture captions' noun phrases
    assert anchors == {"source": NOUN_PHRASES, "count": 10, "sha256": anchor_digest(expected)}
    (tmp_path / "bad.txt").write_bytes(b"\xff\n")
    with pytest.raises(AnchorError, match="not UTF-8"):
        train_on_snapshot(tiny_open_clip_spec, "latest", tmp_path / "bad", config.with_overrides(
            anchor_texts=str(tmp_path / "bad.txt")), url, track=False)
    assert not (tmp_path / "bad").exists()


def test_resume_keeps_the_base_targets(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    """A resumed run must distil towards the base's embeddings, not the checkpoint's: the targets are
    computed before the checkpoint is loaded, and the anchors drawn depend on the step alone."""
    from toolkit.adapters.loading import load_model

    whole = run_tiny_training(tiny_open_clip_spec, tmp_path / "whole", "--anchors")
    assert whole.returncode == 0, whole.stderr
    killed = run_tiny_training(tiny_open_clip_spec, tmp_path / "split", "--anchors", "--kill-after-step", "3")
    assert killed.returncode == -9, killed.stderr
    resumed = run_tiny_training(tiny_open_clip_spec, tmp_path / "split", "--anchors", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected = load_model(str(tmp_path / "whole")).model.state_dict()
    for name, tensor in load_model(str(tmp_path / "split")).model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_resume_refuses_other_anchor_texts(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    from toolkit.adapters.loading import load_model
    from toolkit.data.batches import SyntheticBatchSource
    from toolkit.train.checkpoint import ResumeError
    from toolkit.train.recipe import ClicRecipe

    def recipe(anchors: list[str], resume: bool) -> ClicRecipe:
        adapter = load_model(tiny_open_clip_spec)
        source = SyntheticBatchSource(16, 4, 32, adapter.tokenize)
        return ClicRecipe(tiny_train_config(anchor_weight=1.0), adapter, source,
                          tmp_path / "run", resume=resume, anchor_texts=anchors)

    first = recipe(ANCHORS, resume=False)
    first.setup()
    first._save_checkpoint()
    recipe(ANCHORS, resume=True).setup()  # the same anchors resume
    with pytest.raises(ResumeError, match="anchors_sha256"):
        recipe([*ANCHORS[:-1], "an edited line."], resume=True).setup()


def test_anchor_texts_cut_at_the_context_are_counted_in_a_warning(tiny_open_clip_spec: str, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    from toolkit.adapters.loading import load_model
    from toolkit.data.batches import SyntheticBatchSource
    from toolkit.train.recipe import ClicRecipe

    adapter = load_model(tiny_open_clip_spec)  # a 32-token context
    long = "a red circle next to " * 12 + "a blue square."
    recipe = ClicRecipe(tiny_train_config(anchor_weight=1.0), adapter, SyntheticBatchSource(8, 4, 32, adapter.tokenize),
                        tmp_path / "run", anchor_texts=["a red circle.", long, "a tree."])
    with caplog.at_level("WARNING", logger="toolkit.train.recipe"):
        recipe.setup()
    assert "1 of 3 anchor texts reach the text tower's 32-token context and are cut" in caplog.text
    assert "'a red circle next to" in caplog.text
    caplog.clear()
    ClicRecipe(tiny_train_config(anchor_weight=1.0), load_model(tiny_open_clip_spec),
               SyntheticBatchSource(8, 4, 32, adapter.tokenize), tmp_path / "short",
               anchor_texts=["a red circle.", "a tree."]).setup()
    assert "anchor texts" not in caplog.text
