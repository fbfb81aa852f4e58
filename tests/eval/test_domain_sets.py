"""Catalog-backed benchmarks: retrieval on a snapshot split, and stored domain test sets."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from sqlalchemy import func, select

from tests.helpers import run_toolkit, write_sugarcrepe_pp
from toolkit.catalog.db import Store, open_store
from toolkit.catalog.eval_models import DomainTestItem
from toolkit.catalog.models import Caption, Image, IngestBatch, Sentence
from toolkit.catalog.snapshot import create_snapshot, resolve_snapshot
from toolkit.eval.benchmarks import BenchmarkError, load_benchmark, parse_benchmark_spec
from toolkit.eval.domain_sets import (
    TaggedSentence,
    create_domain_set,
    generate_items,
    held_out_sources,
    kind_of_generator,
    load_domain_set,
)

# (colour, split, captions as (tokens, pos)) — hand-tagged, as the ingest tagger would store them.
CATALOG = [
    ((200, 30, 30), "test", [("a red ball on a box", "DET ADJ NOUN ADP DET NOUN"),
                             ("a box under a red ball", "DET NOUN ADP DET ADJ NOUN")]),
    ((30, 30, 200), "test", [("a blue cup near a plate", "DET ADJ NOUN ADP DET NOUN")]),
    ((30, 200, 30), "test", [("green grass", "ADJ NOUN")]),
    ((90, 90, 90), "train", [("a grey cat on a mat", "DET ADJ NOUN ADP DET NOUN")]),
]


@dataclass(frozen=True)
class Neg:
    text: str
    generator: str
    detail: dict[str, object]


def swap_nouns(source: TaggedSentence, partner: TaggedSentence, rng: random.Random) -> Neg | None:
    """Test generator: exchange the first two nouns of the sentence."""
    nouns = [k for k, tag in enumerate(source.pos) if tag == "NOUN"]
    if len(nouns) < 2:
        return None
    tokens = list(source.tokens)
    a, b = nouns[0], nouns[1]
    tokens[a], tokens[b] = tokens[b], tokens[a]
    return Neg(" ".join(tokens), "swap_nouns", {"positions": [a, b]})


def replace_adjective(source: TaggedSentence, partner: TaggedSentence, rng: random.Random) -> Neg | None:
    """Test generator: the first adjective replaced by the partner's first adjective."""
    mine = [k for k, tag in enumerate(source.pos) if tag == "ADJ"]
    theirs = [w for w, tag in zip(partner.tokens, partner.pos, strict=True) if tag == "ADJ"]
    if not mine or not theirs:
        return None
    tokens = list(source.tokens)
    tokens[mine[0]] = theirs[0]
    return Neg(" ".join(tokens), "replace_adj", {"from": source.tokens[mine[0]], "to": theirs[0]})


def build_catalog(url: str, root: Path) -> Store:
    store = open_store(url)
    root.mkdir(parents=True, exist_ok=True)
    with store.session() as session:
        batch = IngestBatch(source_uri="test", source_kind="jsonl", source_sha256="0" * 64,
                            images_root=str(root), tagger="hand", actor="test", status="committed", counts={})
        session.add(batch)
        session.flush()
        for n, (colour, split, captions) in enumerate(CATALOG):
            name = f"img{n}.png"
            PILImage.new("RGB", (40, 30), colour).save(root / name)
            sha = hashlib.sha256((root / name).read_bytes()).hexdigest()
            image = Image(sha256=sha, images_root=str(root), path=name, width=40, height=30, format="PNG",
                          num_bytes=(root / name).stat().st_size, split=split, batch_id=batch.id)
            session.add(image)
            session.flush()
            for text, tags in captions:
                caption = Caption(image_id=image.id, text=text, status="active", batch_id=batch.id,
                                  text_sha256=hashlib.sha256(text.encode()).hexdigest(), source_row=name)
                session.add(caption)
                session.flush()
                session.add(Sentence(caption_id=caption.id, position=0, text=text, tokens=text.split(),
                                     pos=tags.split(), tagger="hand"))
    create_snapshot(store, name="s1")
    return store


def test_kind_of_generator() -> None:
    kinds = [kind_of_generator(g) for g in ("swap_across", "swap_within", "replace")]
    assert kinds == ["swap", "swap", "replace"]
    with pytest.raises(ValueError, match="cannot tell its kind"):
        kind_of_generator("shuffle")


def test_generation_is_deterministic_and_drops_non_negatives() -> None:
    sources = [
        held for held in (
            (1, "a", 10, TaggedSentence("a red ball on a box", tuple(["a", "red", "ball", "on", "a", "box"]),
                                        ("DET", "ADJ", "NOUN", "ADP", "DET", "NOUN"))),
            (2, "b", 20, TaggedSentence("a red cup", ("a", "red", "cup"), ("DET", "ADJ", "NOUN"))),
        )
    ]
    from toolkit.eval.domain_sets import DomainSource

    srcs = [DomainSource(i, sha, c, s) for i, sha, c, s in sources]
    items = generate_items(srcs, [swap_nouns, replace_adjective], seed=3)
    # item 1's adjective replaced by partner's "red" is no change, so it is dropped; "a red cup" has 1 noun.
    assert [(i.caption_id, i.negative, i.generator, i.kind) for i in items] == [
        (10, "a red box on a ball", "swap_nouns", "swap")]
    assert json.loads(items[0].detail) == {"positions": [2, 5]}
    assert generate_items(srcs, [swap_nouns, replace_adjective], seed=3) == items


def test_domain_set_is_stored_once_and_scored_on_the_same_items(tmp_path: Path, catalog_url: str,
                                                                tiny_open_clip_spec: str) -> None:
    from toolkit.eval.evaluate import evaluate

    store = build_catalog(catalog_url, tmp_path / "images")
    first, created = create_domain_set(store, "latest", "test", [swap_nouns, replace_adjective], seed=0)
    again, created_again = create_domain_set(store, "s1", "test", [swap_nouns, replace_adjective], seed=0)
    assert created and not created_again and again.id == first.id
    with store.session() as session:
        snapshot = resolve_snapshot(session, "latest")
        assert len(held_out_sources(session, snapshot.id, "test")) == 4  # the train caption stays out
        assert session.scalar(select(func.count()).select_from(DomainTestItem)) == first.counts["items"]
        bench = load_domain_set(session, "latest", "test")
    items = [i for subset in bench.subsets.values() for i in subset]
    assert {i.generator for i in items} == {"swap_nouns", "replace_adj"}
    swaps = {i.positive: i.negative for i in bench.subsets["swap_nouns"]}
    assert swaps["a red ball on a box"] == "a red box on a ball"
    assert swaps["a blue cup near a plate"] == "a blue plate near a cup"
    assert "green grass" not in swaps  # one noun: the generator declined
    report = evaluate([tiny_open_clip_spec], [bench])
    result = report.results[tiny_open_clip_spec]["domain"]
    assert set(result) == {"swap_nouns", "replace_adj", "swap", "replace", "all"}
    n_swap, n_replace = len(bench.subsets["swap_nouns"]), len(bench.subsets["replace_adj"])
    overall = (result["swap"]["acc"] * n_swap + result["replace"]["acc"] * n_replace) / (n_swap + n_replace)
    assert result["all"]["acc"] == pytest.approx(overall)
    # The CLI form resolves the same stored set.
    via_spec = load_benchmark(parse_benchmark_spec("domain:latest:test"), db_url=catalog_url)
    assert via_spec == bench
    store.close()


def test_missing_domain_set_says_how_to_make_one(tmp_path: Path, catalog_url: str) -> None:
    store = build_catalog(catalog_url, tmp_path / "images")
    with store.session() as session, pytest.raises(BenchmarkError, match=r"no domain test set .* create one"):
        load_domain_set(session, "latest", "test")
    store.close()


def test_retrieval_from_snapshot_split(tmp_path: Path, catalog_url: str, tiny_open_clip_spec: str) -> None:
    from toolkit.eval import metrics
    from toolkit.eval.evaluate import Encoder, EvalConfig, evaluate

    store = build_catalog(catalog_url, tmp_path / "images")
    store.close()
    bench = load_benchmark(parse_benchmark_spec("retrieval:latest:test"), db_url=catalog_url)
    assert len(bench.images) == 3 and len(bench.texts) == 4  # type: ignore[union-attr]
    index = np.asarray(bench.text_image)  # type: ignore[union-attr]
    assert sorted(np.bincount(index).tolist()) == [1, 1, 2]
    report = evaluate([tiny_open_clip_spec], [bench])
    result = report.results[tiny_open_clip_spec]["retrieval"]
    # R@5 and R@10 are 100 by construction with 3 images (toolkit.eval.metrics' own tests check R@k, k > 1).
    assert report.counts[tiny_open_clip_spec]["retrieval"] == {"text_to_image": 4, "image_to_text": 3}
    # R@1 recomputed by hand from the same embeddings: strict best, ties against.
    from toolkit.adapters.loading import load_model

    enc = Encoder(load_model(tiny_open_clip_spec), EvalConfig())
    sims = metrics.cosine_matrix(enc.texts(bench.texts), enc.images(bench.images))  # type: ignore[union-attr]
    t2i = [all(sims[t, index[t]] > sims[t, j] for j in range(3) if j != index[t]) for t in range(4)]
    assert result["text_to_image"]["r1"] == pytest.approx(100 * np.mean(t2i))
    i2t = [all(max(sims[index == i, i]) > sims[t, i] for t in np.flatnonzero(index != i)) for i in range(3)]
    assert result["image_to_text"]["r1"] == pytest.approx(100 * np.mean(i2t))


def test_cli_eval_json_and_errors(tmp_path: Path, tiny_open_clip_spec: str) -> None:

    folder = write_sugarcrepe_pp(tmp_path / "scpp")
    out = tmp_path / "out"
    scpp = ["eval", "--model", tiny_open_clip_spec, "--benchmark", f"sugarcrepe_pp:{folder}"]
    result = run_toolkit([*scpp, "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload[tiny_open_clip_spec]["sugarcrepe_pp"]) >= {"swap_obj", "average"}
    assert json.loads((out / "results.json").read_text())["results"] == payload
    table = run_toolkit(scpp)
    assert table.exit_code == 0 and "Evaluation (%)" in table.stderr and "failures kept" in table.stderr
    (folder / "swap_obj.json").write_text("[]", encoding="utf-8")
    bad = run_toolkit(scpp)
    assert bad.exit_code == 3
    assert "swap_obj.json: expected a non-empty JSON list" in " ".join(bad.stderr.split())  # rich wraps
    unknown = run_toolkit(["eval", "--model", tiny_open_clip_spec, "--benchmark", "coco:/x"])
    assert unknown.exit_code == 3 and "KIND one of" in " ".join(unknown.stderr.split())
    not_a_device = run_toolkit([*scpp, "--device", "gpu0"])
    assert not_a_device.exit_code == 3 and "'gpu0' is not a torch device" in " ".join(not_a_device.stderr.split())
    if not torch.cuda.is_available():
        no_cuda = run_toolkit([*scpp, "--device", "cuda"])
        assert no_cuda.exit_code == 3 and "sees no CUDA device" in " ".join(no_cuda.stderr.split())


def test_named_generators_from_the_negatives_module(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    build_catalog(url, tmp_path / "images").close()
    args = ["eval-domain-set", "--db", url, "--generator", "swap_within", "--generator", "replace", "--json"]
    first = run_toolkit(args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["created"] and summary["generators"] == ["replace", "swap_within"]
    again = json.loads(run_toolkit(args).stdout)
    assert (again["created"], again["id"]) == (False, summary["id"])  # same seed, same items
    store = open_store(url)
    with store.session() as session:
        bench = load_domain_set(session, "latest", "test")
    store.close()
    for item in bench.subsets["swap_within"]:
        # swap_within keeps the words and changes their order
        assert sorted(item.negative.split()) == sorted(item.positive.split()) != item.negative.split()
    vocabulary = {word for _colour, split, captions in CATALOG if split == "test"
                  for text, _tags in captions for word in text.split()}
    for item in bench.subsets["replace"]:
        changed = set(item.negative.split()) - set(item.positive.split())
        assert len(changed) == 1 and changed <= vocabulary


@pytest.mark.parametrize(("generator", "expected"), [
    ("swap_across", "cannot make single-image test items"),
    ("foo", "use swap_within and/or replace"),
])
def test_an_unknown_generator_is_a_bad_option(tmp_path: Path, generator: str,
                                              expected: str) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    build_catalog(url, tmp_path / "images").close()
    refused = run_toolkit(["eval-domain-set", "--db", url, "--generator", generator])
    message = " ".join(refused.stderr.replace("│", " ").split())  # rich wraps and boxes
    assert refused.exit_code == 2, message
    assert "Invalid value for '--generator'" in message and expected in message


def test_naming_a_set_whose_items_are_already_stored(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    build_catalog(url, tmp_path / "images").close()
    args = ["eval-domain-set", "--db", url, "--generator", "swap_within", "--json"]
    unnamed = json.loads(run_toolkit(args).stdout)
    named = run_toolkit([*args, "--name", "B"])
    assert named.exit_code == 0, named.output
    # The stored set takes the name it lacked, so the reference the user was told about works.
    summary = json.loads(named.stdout)
    assert (summary["id"], summary["created"], summary["name"]) == (unnamed["id"], False, "B")
    by_name = load_benchmark(parse_benchmark_spec("domain:latest:test:B"), db_url=url)
    assert by_name == load_benchmark(parse_benchmark_spec("domain:latest:test"), db_url=url)
    assert run_toolkit([*args, "--name", "B"]).exit_code == 0
    # One set has one name: a second one is refused, saying which name to use.
    renamed = run_toolkit([*args, "--name", "C"])
    message = " ".join(renamed.stderr.split())
    assert renamed.exit_code == 3
    assert "already stored as domain set 'B'" in message and "domain:latest:test:B" in message
    with pytest.raises(BenchmarkError, match="no domain test set named 'C'"):
        load_benchmark(parse_benchmark_spec("domain:latest:test:C"), db_url=url)


def test_negatives_reviewers_marked_true_are_not_scored(tmp_path: Path, catalog_url: str) -> None:
    from toolkit.eval.evaluate import Failure
    from toolkit.governance.review import record_failures, record_verdict

    store = build_catalog(catalog_url, tmp_path / "images")
    create_domain_set(store, "latest", "test", [swap_nouns, replace_adjective], seed=0)
    with store.session() as session:
        before = [i for subset in load_domain_set(session, "latest", "test").subsets.values() for i in subset]
    true_negative = next(i for i in before if i.negative == "a red box on a ball")
    assert [i.negative for i in before].count(true_negative.negative) == 1 and len(before) > 2
    [review_id] = record_failures(store, "eval-run", "base", [Failure(
        "domain", "all", "acc", true_negative.item_id, str(true_negative.image), true_negative.positive,
        true_negative.negative, 0.1, 0.2, true_negative.generator)])
    record_verdict(store, review_id, "negative_true", reviewer="tester")
    with store.session() as session:
        after = [i for subset in load_domain_set(session, "latest", "test").subsets.values() for i in subset]
    assert after == [i for i in before if i is not true_negative]
    store.close()
