"""CLIC samples and batches from a tiny catalog built with the ORM, over small generated PNGs."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from PIL import Image as PILImage
from torch.utils.data import DataLoader

from tests.helpers import add_hashed_images, run_toolkit
from toolkit.adapters.base import ImageNorm
from toolkit.catalog.db import Store, open_store
from toolkit.catalog.snapshot import create_snapshot
from toolkit.data.datasets import (
    ClicBatch,
    ClicCollate,
    ClicDataset,
    EpochBatches,
    PlainCollate,
    PlainDataset,
    SampleConfig,
    SampleKey,
    compose_pair,
)
from toolkit.data.records import load_training_records
from toolkit.data.samples import (
    EmptySnapshotError,
    PairingIndex,
    TooFewImagesError,
    TrainingRecord,
    choose_extras,
    epoch_order,
)
from toolkit.negatives.generators import match_key

RED, BLUE, GREEN, YELLOW = (255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 0)
# Normalisation chosen so each colour lands on distinctive values: (x - mean) / std per channel.
NORM = ImageNorm(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0), size=8)


def normalised(rgb: tuple[int, int, int]) -> torch.Tensor:
    return torch.tensor([(c / 255 - m) / s for c, m, s in zip(rgb, NORM.mean, NORM.std, strict=True)])


# (file, colour, width, height, split, [(sentence, tags), ...])
CATALOG = [
    ("red.png", RED, 40, 20, "train", [
        ("A man wearing a black hat.", "DET NOUN VERB DET ADJ NOUN PUNCT"),
        ("He stands outside.", "PRON VERB ADV PUNCT"),
        ("The sky is clear.", "DET NOUN AUX ADJ PUNCT"),
        ("It is sunny.", "PRON AUX ADJ PUNCT")]),
    ("blue.png", BLUE, 60, 30, "train", [
        ("A water feature in a garden.", "DET NOUN NOUN ADP DET NOUN PUNCT"),
        ("Plants grow nearby.", "NOUN VERB ADV PUNCT")]),
    ("green.png", GREEN, 20, 40, "train", [
        ("A red cube left of a blue ball.", "DET ADJ NOUN ADV ADP DET ADJ NOUN PUNCT")]),
    ("yellow.png", YELLOW, 30, 50, "train", [
        ("A tall tower near a river.", "DET ADJ NOUN ADP DET NOUN PUNCT"),
        ("Boats pass by.", "NOUN VERB ADV PUNCT")]),
    ("grey.png", (128, 128, 128), 40, 40, "val", [
        ("A grey square.", "DET ADJ NOUN PUNCT")]),
]




@pytest.fixture
def store(catalog_url: str, tmp_path: Path) -> Store:
    store = open_store(catalog_url)
    add_hashed_images(store, tmp_path, CATALOG)
    create_snapshot(store, name="tiny")
    return store


@pytest.fixture
def records(store: Store) -> list[TrainingRecord]:
    with store.session() as session:
        return load_training_records(session, "latest")


def test_records_come_from_the_snapshot_split(records: list[TrainingRecord], tmp_path: Path) -> None:
    assert [r.image_path for r in records] == [tmp_path / n for n in ("red.png", "blue.png", "green.png",
                                                                      "yellow.png")]
    red = records[0]
    assert (red.width, red.height, red.aspect) == (40, 20, "wide")
    assert records[2].aspect == "tall"
    assert red.first.tokens == ("A", "man", "wearing", "a", "black", "hat", ".")
    assert [s.text for s in red.extras] == ["He stands outside.", "The sky is clear.", "It is sunny."]


def test_word_range_drops_short_sentences_and_empty_captions(store: Store) -> None:
    with store.session() as session:
        kept = load_training_records(session, "tiny", word_range=(4, 34))
    # 3-word sentences go ("He stands outside", "Plants grow nearby", "Boats pass by", "It is sunny").
    assert [len(r.sentences) for r in kept] == [2, 1, 1, 1]
    assert kept[0].extras[0].text == "The sky is clear."


def test_empty_split_is_a_clear_error(store: Store) -> None:
    with store.session() as session, pytest.raises(EmptySnapshotError, match=r"no 'test' captions.*snapshot"):
        load_training_records(session, "latest", split="test")
    with store.session() as session, pytest.raises(EmptySnapshotError, match="widen the word range"):
        load_training_records(session, "latest", word_range=(30, 34))


def test_a_lone_image_in_an_aspect_class_is_a_clear_error(catalog_url: str, tmp_path: Path) -> None:
    store = open_store(catalog_url)
    add_hashed_images(store, tmp_path, [CATALOG[0], CATALOG[1], CATALOG[2]])  # two wide, one tall
    create_snapshot(store)
    with store.session() as session:
        records = load_training_records(session, "latest")
    with pytest.raises(TooFewImagesError, match=r"tall aspect class has only one image .*green.png"):
        PairingIndex(records)
    with pytest.raises(TooFewImagesError):
        ClicDataset(records, NORM, seed=0)


def test_partner_is_always_another_image_of_the_same_aspect(records: list[TrainingRecord]) -> None:
    pairing = PairingIndex(records)
    rng = random.Random(0)
    for index, record in enumerate(records):
        partners = {pairing.partner(index, rng) for _ in range(20)}
        expected = {i for i, r in enumerate(records)
                    if r.aspect == record.aspect and r.image_id != record.image_id}
        assert partners == expected


def test_partner_skips_every_caption_of_the_own_image() -> None:
    def record(caption_id: int, image_id: int) -> TrainingRecord:
        return TrainingRecord(caption_id, image_id, Path(f"{image_id}.png"), 20, 10, records_sentence)

    from toolkit.negatives.generators import TaggedSentence
    records_sentence = (TaggedSentence.of(["a", "dog"], ["DET", "NOUN"]),)
    many = [record(1, 1), record(2, 1), record(3, 1), record(4, 2), record(5, 3)]
    pairing = PairingIndex(many)
    rng = random.Random(1)
    assert {pairing.partner(1, rng) for _ in range(40)} == {3, 4}
    assert {pairing.partner(3, rng) for _ in range(40)} == {0, 1, 2, 4}


def test_tiles_sit_in_the_right_half_with_the_models_normalisation(records: list[TrainingRecord]) -> None:
    dataset = ClicDataset(records, NORM, seed=3)
    colours = {0: RED, 1: BLUE, 2: GREEN, 3: YELLOW}
    orders = set()
    for index in range(len(records)):
        for epoch in range(4):
            sample = dataset[SampleKey(epoch, index)]
            plan = dataset.plan(SampleKey(epoch, index))
            assert sample.image.shape == (3, 8, 8)
            first, second = (index, plan.partner) if plan.anchor_first else (plan.partner, index)
            halves = ((sample.image[:, :4, :], sample.image[:, 4:, :]) if records[index].aspect == "wide"
                      else (sample.image[:, :, :4], sample.image[:, :, 4:]))
            for half, owner in zip(halves, (first, second), strict=True):
                expected = normalised(colours[owner]).view(3, 1, 1).expand_as(half)
                torch.testing.assert_close(half, expected, atol=1e-3, rtol=0)
            orders.add(plan.anchor_first)
    assert orders == {True, False}
    # Hand check: red (1, 0, 0) -> ((1 - .5) / .5, (0 - .25) / .25, 0) = (1, -1, 0).
    torch.testing.assert_close(normalised(RED), torch.tensor([1.0, -1.0, 0.0]))


def test_compose_pair_refuses_tiles_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="do not make a 3×8×8 wide image"):
        compose_pair(torch.zeros(3, 4, 8), torch.zeros(3, 3, 8), "wide", NORM)


def test_texts_follow_the_method(records: list[TrainingRecord]) -> None:
    dataset = ClicDataset(records, NORM, seed=0)
    for index in range(len(records)):
        plan = dataset.plan(SampleKey(0, index))
        anchor, partner = records[index], records[plan.partner]
        c1, c2 = anchor.first.text.lower(), partner.first.text.lower()
        texts = plan.texts
        assert texts.p1 == f"{c1} {c2}" and texts.p2 == f"{c2} {c1}"
        extras_a = {s.text.lower() for s in anchor.extras} or {c1}
        extras_b = {s.text.lower() for s in partner.extras} or {c2}
        for p in (texts.p3, texts.p4):
            assert any(p in (f"{a} {b}", f"{b} {a}") for a in extras_a for b in extras_b)
        assert texts.generator == "swap_across"
        assert match_key(texts.negative) not in {match_key(texts.p1), match_key(texts.p2)}
        assert texts.negative == texts.negative.lower()


def test_extras_without_replacement_padded_or_first_sentence() -> None:
    from toolkit.negatives.generators import TaggedSentence

    def sentence(text: str) -> TaggedSentence:
        words = text.split()
        return TaggedSentence.of(words, ["NOUN"] * len(words))

    def record(*texts: str) -> TrainingRecord:
        return TrainingRecord(1, 1, Path("x.png"), 1, 1, tuple(sentence(t) for t in texts))

    for seed in range(20):
        rng = random.Random(seed)
        three = choose_extras(record("first", "e1", "e2", "e3"), rng)
        assert len(set(three)) == 2 and set(three) <= {"e1", "e2", "e3"}
        assert choose_extras(record("first", "e1"), rng) == ["e1", "e1"]
        assert choose_extras(record("first"), rng) == ["first", "first"]


def test_samples_are_pure_functions_of_seed_epoch_index(records: list[TrainingRecord]) -> None:
    one, two = ClicDataset(records, NORM, seed=5), ClicDataset(records, NORM, seed=5)
    for index in range(len(records)):
        for epoch in range(3):
            a, b = one[SampleKey(epoch, index)], two[SampleKey(epoch, index)]
            assert a.texts == b.texts and a.partner == b.partner
            assert torch.equal(a.image, b.image)
    plans = {str(one.plan(SampleKey(e, 0))) for e in range(8)}
    assert len(plans) > 1  # epochs draw differently


def test_batch_layout_p1_p2_p3_p4_n(records: list[TrainingRecord]) -> None:
    import open_clip

    tokenizer = open_clip.SimpleTokenizer(context_length=32)
    config = SampleConfig(generators=("swap_within", "swap_across"))
    dataset = ClicDataset(records, NORM, seed=0, config=config)
    samples = [dataset[SampleKey(0, i)] for i in range(4)]
    batch = ClicCollate(tokenizer)(samples)
    assert isinstance(batch, ClicBatch)
    assert batch.images.shape == (4, 3, 8, 8) and batch.images.dtype == torch.float32
    assert batch.tokens.shape == (20, 32) and batch.tokens.dtype == torch.int64
    for i, sample in enumerate(samples):
        assert torch.equal(batch.images[i], sample.image)
        for block, text in enumerate(sample.texts.as_list()):
            assert batch.texts[block * 4 + i] == text
            assert torch.equal(batch.tokens[block * 4 + i], tokenizer([text])[0])
    assert batch.block("n") == [s.texts.negative for s in samples]
    assert batch.negative_generators == [s.texts.generator for s in samples]
    # Every first sentence has two nouns, so the first configured generator always succeeds: one sentence
    # is edited, the other is kept word for word.
    assert batch.negative_generators == ["swap_within"] * 4
    for i, sample in enumerate(samples):
        c1 = records[i].first.text.lower()
        c2 = records[sample.partner].first.text.lower()
        negative = sample.texts.negative
        assert (c1 in negative) != (c2 in negative)


def test_epoch_order_resume_and_ddp_shards() -> None:
    order = epoch_order(10, seed=1, epoch=2)
    assert sorted(order) == list(range(10)) and order == epoch_order(10, seed=1, epoch=2)
    assert order != epoch_order(10, seed=1, epoch=3)
    full = [[k.index for k in batch] for batch in EpochBatches(10, 4, seed=1, epoch=2)]
    assert full == [order[0:4], order[4:8]]  # the incomplete last batch is dropped
    resumed = [[k.index for k in batch] for batch in EpochBatches(10, 4, seed=1, epoch=2, start_batch=1)]
    assert resumed == full[1:]
    ranks = [[[k.index for k in b] for b in EpochBatches(10, 4, seed=1, epoch=2, rank=r, world_size=2)]
             for r in range(2)]
    for g, global_batch in enumerate(full):
        assert ranks[0][g] + ranks[1][g] == global_batch
    assert all(k.epoch == 2 for batch in EpochBatches(10, 4, seed=1, epoch=2) for k in batch)
    with pytest.raises(ValueError, match="multiple of the world size"):
        EpochBatches(10, 3, seed=1, world_size=2)


def test_dataloader_with_workers_gives_the_same_batches(records: list[TrainingRecord]) -> None:
    import open_clip

    tokenizer = open_clip.SimpleTokenizer(context_length=16)
    dataset = ClicDataset(records, NORM, seed=9)

    def run(workers: int) -> list[ClicBatch]:
        loader = DataLoader(dataset, batch_sampler=EpochBatches(len(dataset), 2, seed=9, epoch=1),
                            collate_fn=ClicCollate(tokenizer), num_workers=workers)
        return list(loader)

    inline, parallel = run(0), run(1)
    assert len(inline) == 2
    for a, b in zip(inline, parallel, strict=True):
        assert a.texts == b.texts and a.keys == b.keys
        assert torch.equal(a.images, b.images) and torch.equal(a.tokens, b.tokens)


def test_plain_batches_use_the_models_eval_transform(records: list[TrainingRecord],
                                                     tiny_config_path: Path) -> None:
    from toolkit.adapters.open_clip_adapter import OpenClipAdapter

    adapter = OpenClipAdapter.create(str(tiny_config_path), None)
    dataset = PlainDataset(records, adapter.image_transform())
    batch = PlainCollate(adapter.tokenize)([dataset[i] for i in range(len(records))])
    assert batch.images.shape == (4, 3, 32, 32) and batch.tokens.shape == (4, 32)
    assert batch.texts == ["a man wearing a black hat.", "a water feature in a garden.",
                           "a red cube left of a blue ball.", "a tall tower near a river."]
    mean = torch.tensor(adapter.image_norm.mean).view(3, 1, 1)
    std = torch.tensor(adapter.image_norm.std).view(3, 1, 1)
    torch.testing.assert_close(batch.images[1], ((torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1) - mean) / std)
                               .expand(3, 32, 32), atol=1e-3, rtol=0)


def test_cli_preview_shows_negatives_with_generator_names(store: Store) -> None:
    import json

    import typer

    from toolkit.cli.negatives import register

    app = typer.Typer()
    register(app)
    args = ["negatives", "preview", "--db", store.url, "--n", "3", "--seed", "4", "--json"]
    result = run_toolkit([*args, "--generator", "replace"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["generators"] == ["replace"] and len(payload["samples"]) == 3
    for row in payload["samples"]:
        assert row["generator"] == "replace" and row["negative"] != row["positive"]
    assert json.loads(run_toolkit([*args, "--generator", "replace"]).stdout) == payload  # same seed
    table = run_toolkit(["negatives", "preview", "--db", store.url, "--n", "2"])
    assert table.exit_code == 0 and "swap_across" in table.stdout
    bad = run_toolkit([*args, "--generator", "nope"])
    assert bad.exit_code == 2
    empty = run_toolkit([*args, "--split", "test"])
    assert empty.exit_code == 3


def test_dataset_never_emits_an_excluded_negative(records: list[TrainingRecord]) -> None:
    plain = ClicDataset(records, NORM, seed=2)
    seen = {plain.plan(SampleKey(e, i)).texts.negative for e in range(6) for i in range(len(records))}
    flagged = sorted(seen)[:3]
    screened = ClicDataset(records, NORM, seed=2, excluded=flagged)
    for e in range(6):
        for i in range(len(records)):
            negative = screened.plan(SampleKey(e, i)).texts.negative
            assert match_key(negative) not in {match_key(f) for f in flagged}


def test_single_image_samples_have_no_partner_and_a_within_caption_negative(
        records: list[TrainingRecord], tiny_config_path: Path) -> None:
    """The no-concatenation ablation: own image only, texts [c1, c1, e1, e2, n(c1)]."""
    from toolkit.adapters.open_clip_adapter import OpenClipAdapter
    from toolkit.data.datasets import SingleImageLoader

    adapter = OpenClipAdapter.create(str(tiny_config_path), None)
    load = SingleImageLoader(adapter.image_transform())
    config = SampleConfig(generators=("swap_within", "replace"), concatenate=False)
    dataset = ClicDataset(records, adapter.image_norm, seed=0, config=config, single_image_loader=load)
    plain = PlainDataset(records, adapter.image_transform())
    for index, record in enumerate(records):
        sample = dataset[SampleKey(0, index)]
        assert sample.partner == index
        assert torch.equal(sample.image, plain[index].image)  # the plain steps' pixels, no concatenation
        c1 = record.first.text.lower()
        texts = sample.texts
        assert texts.p1 == texts.p2 == c1
        extras = {s.text.lower() for s in record.extras} or {c1}
        assert {texts.p3, texts.p4} <= extras
        assert texts.generator in ("swap_within", "replace")
        assert match_key(texts.negative) != match_key(c1)
        # One edit of c1 alone: same word count, nothing of any other caption.
        assert len(texts.negative.split()) == len(c1.split())
    # "a red cube left of a blue ball." has two nouns and two adjectives: swap_within always succeeds.
    cube = next(i for i, r in enumerate(records) if "cube" in r.first.text)
    assert dataset[SampleKey(0, cube)].texts.generator == "swap_within"


def test_single_image_mode_refuses_cross_caption_generators_and_needs_a_loader(
        records: list[TrainingRecord]) -> None:
    from toolkit.train.config import ConfigError, TrainConfig

    with pytest.raises(ValueError, match="need concatenation"):
        SampleConfig(generators=("swap_within", "swap_across"), concatenate=False)
    with pytest.raises(ConfigError, match="swap_across generator needs concatenated pairs"):
        TrainConfig(concatenate=False)
    with pytest.raises(ValueError, match="single_image_loader"):
        ClicDataset(records, NORM, seed=0, config=SampleConfig(generators=("replace",), concatenate=False))


def test_an_image_file_changed_after_ingest_is_refused_on_its_first_read(records: list[TrainingRecord],
                                                                        tmp_path: Path) -> None:
    import toolkit.data.datasets as data

    red = next(r for r in records if r.image_path.name == "red.png")
    blue = next(r for r in records if r.image_path.name == "blue.png")
    PILImage.new("RGB", (60, 30), (0, 0, 254)).save(blue.image_path)  # valid pixels, other bytes
    with pytest.raises(data.ImageLoadError, match=r"blue\.png.*changed since ingest"):
        data.load_half_tiles(red, blue, "wide", 8)
    with pytest.raises(data.ImageLoadError, match=r"blue\.png.*changed since ingest"):
        PlainDataset(records, lambda image: torch.zeros(3, 8, 8))[records.index(blue)]
    torch.testing.assert_close(data.load_half_tiles(red, red, "wide", 8)[0][:, 0, 0], torch.tensor([1.0, 0, 0]))
    assert (red.image_path, red.sha256) in data._verified_images  # checked once, then trusted in this process
    blue.image_path.unlink()
    assert data.missing_image_files(records) == [blue.image_path]


def test_cli_preview_leaves_out_the_negatives_reviewers_excluded(store: Store) -> None:
    import json

    import typer

    from toolkit.cli.negatives import register
    from toolkit.eval.evaluate import Failure
    from toolkit.governance.review import record_failures, record_verdict

    app = typer.Typer()
    register(app)
    args = ["negatives", "preview", "--db", store.url, "--n", "4", "--seed", "4", "--json"]
    before = json.loads(run_toolkit(args).stdout)
    flagged = before["samples"][0]
    assert flagged["negative"]
    (item,) = record_failures(store, "eval-1", "candidate", [
        Failure("domain", "all", "acc", "1", "x.png", flagged["positive"], flagged["negative"], 0.1, 0.2,
                flagged["generator"])])
    record_verdict(store, item, "negative_true", reviewer="rita")
    after = json.loads(run_toolkit(args).stdout)
    assert match_key(flagged["negative"]) not in {match_key(row["negative"]) for row in after["samples"]}
    assert (before["excluded_negatives"], after["excluded_negatives"]) == (0, 1)


def test_a_sentence_no_generator_can_edit_is_refused_with_a_hint_that_fits_the_config() -> None:
    from toolkit.data.samples import NegativeUnavailableError, plan_clic_sample
    from toolkit.negatives.generators import NegativeContext, TaggedSentence

    # one pronoun and a verb: nothing to swap, nothing of a class `replace` knows
    record = TrainingRecord(7, 1, Path("x.png"), 1, 1, (TaggedSentence.of(["it", "rains", "."],
                                                                          ["PRON", "VERB", "PUNCT"]),))
    context = NegativeContext.of_corpus(record.sentences)

    def refusal(generators: tuple[str, ...]) -> str:
        config = SampleConfig(generators=generators, concatenate=False)
        with pytest.raises(NegativeUnavailableError) as raised:
            plan_clic_sample([record], None, 0, random.Random(0), config, context)
        return str(raised.value)

    without_fallback = refusal(("swap_within",))
    assert "caption 7" in without_fallback and "'it rains.'" in without_fallback
    assert "add 'replace' as a fallback" in without_fallback
    with_fallback = refusal(("swap_within", "replace"))
    assert "add 'replace'" not in with_fallback and "as it was tagged at ingest" in with_fallback
