"""Hard negatives on real language: the old generators against the new, side by side, in one run.

On the SugarCrepe positives (real COCO captions, ../shared/data/sugarcrepe, MIT), paired as CLIC pairs them:
1. the audit table (coverage and every automatic flag rate, `toolkit.negatives.audit`) per generator;
2. SugarCrepe swap_att: share of items whose human negative the swap generators can produce at all;
3. `replace` on a colour word: share of draws that give another colour;
4. swap_relation / swap_attribute coverage on captions that have a relation / two adjective-noun phrases;
5. ingest tagging cost: captions per CPU-second of today's tagger-only pipeline and of the parsing one.

The old generators are loaded from git history (commit OLD_COMMIT), not kept as a copy.

    python bench/bench_negatives.py [--data ../shared/data/sugarcrepe] [--limit N]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from toolkit.core.parse import TaggedSentence
from toolkit.ingest.tagging import load_tagger
from toolkit.negatives import generators as new
from toolkit.negatives import lexicon
from toolkit.negatives.audit import FLAGS, WordFacts, audit, format_table
from toolkit.negatives.generators import match_key
from toolkit.negatives.registry import GENERATORS

OLD_COMMIT = "c072d55"
ROOT = Path(__file__).resolve().parents[1]


def load_old_generators() -> ModuleType:
    source = subprocess.run(["git", "show", f"{OLD_COMMIT}:toolkit/negatives/generators.py"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_generators.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_generators", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_generators"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def read_captions(data: Path) -> list[str]:
    seen: dict[str, None] = {}
    for path in sorted(data.glob("*.json")):
        for item in json.loads(path.read_text()).values():
            seen.setdefault(item["caption"].strip(), None)
    return list(seen)


def tag_both(captions: list[str]) -> tuple[list[Any], list[TaggedSentence], dict[str, float]]:
    """Today's tagger-only pipeline and the parsing one, each timed in CPU seconds on the same captions."""
    import spacy

    tagger = load_tagger()
    name = tagger.spec.split(":", 1)[1].rsplit("@", 1)[0]
    old_nlp = spacy.load(name, exclude=["parser", "ner", "lemmatizer", "senter", "textcat"])
    old_nlp("warm up")
    tagger.tag(["warm up"])
    # Interleaved, best of 3 each: the machine is shared, and the least-disturbed run is the closest to cost.
    old_cpu = new_cpu = float("inf")
    for _ in range(3):
        start = time.process_time()
        old_docs = [([t.text for t in d], [t.pos_ or "X" for t in d]) for d in old_nlp.pipe(captions, batch_size=256)]
        old_cpu = min(old_cpu, time.process_time() - start)
        start = time.process_time()
        parsed = tagger.tag(captions)
        new_cpu = min(new_cpu, time.process_time() - start)
    old_rate, new_rate = len(captions) / old_cpu, len(captions) / new_cpu
    return old_docs, parsed, {"old_per_cpu_s": round(old_rate), "new_per_cpu_s": round(new_rate),
                              "ratio": round(new_rate / old_rate, 3)}


def reachability(data: Path, old: ModuleType, tagger: Any, limit: int | None) -> dict[str, float]:
    """SugarCrepe swap_att: can the swap generators produce the human negative at all (any of their edits)?"""
    items = list(json.loads((data / "swap_att.json").read_text()).values())[:limit]
    parsed_items = tagger.tag([i["caption"] for i in items])
    old.MAX_ATTEMPTS = 10 ** 6  # enumerate every edit the old generator could draw
    hits_old = hits_new = 0
    for item, parsed in zip(items, parsed_items, strict=True):
        target = match_key(item["negative_caption"])
        legacy = old.TaggedSentence.of(parsed.tokens, _old_pos(parsed))
        old_texts = {match_key(old.detokenize(t)) for t, _ in old._swap_within_candidates(legacy, random.Random(0))}
        hits_old += target in old_texts
        new_texts = {match_key(c.text) for name in ("swap_within", "swap_attribute", "swap_relation")
                     for c in new.sentence_candidates(name, parsed, new.NegativeContext())}
        hits_new += target in new_texts
    return {"items": len(items), "old": round(hits_old / len(items), 4), "new": round(hits_new / len(items), 4)}


_OLD_POS: dict[tuple[str, ...], tuple[str, ...]] = {}


def _old_pos(parsed: TaggedSentence) -> tuple[str, ...]:
    return _OLD_POS.get(parsed.tokens, parsed.pos)


def colour_share(sentences: list[TaggedSentence], old_sentences: list[Any], old: ModuleType) -> dict[str, Any]:
    """`replace` drawn on every caption: of the draws that edit a colour word, the share that give a colour."""
    old_vocab = old.build_vocabulary(old_sentences)
    context = new.NegativeContext.of_corpus(sentences)
    counts = {"old": [0, 0], "new": [0, 0]}
    for seed in range(3):
        rng_old, rng_new = random.Random(f"o{seed}"), random.Random(f"n{seed}")
        for sentence, legacy in zip(sentences, old_sentences, strict=True):
            for key, negative in (("old", old.hard_negative_replace(legacy, old_vocab, rng_old)),
                                  ("new", new.first_allowed("replace", sentence, rng_new, context,
                                                           new._Screen([sentence.text], ())))):
                if negative is None:
                    continue
                before, after = negative.detail["words"][:2]
                if lexicon.kind(before) == "colour":
                    counts[key][0] += 1
                    counts[key][1] += lexicon.kind(after) == "colour"
    return {k: {"colour_draws": n, "to_colour": round(c / n, 4) if n else None} for k, (n, c) in counts.items()}


def has_relation(s: TaggedSentence) -> bool:
    return any(s.pos[a] == "NOUN" and s.pos[b] == "NOUN" for a, _, b in new._relation_pairs(s))


def has_two_attributes(s: TaggedSentence) -> bool:
    heads = {s.heads[i] for i in range(len(s.tokens))
             if s.deps[i] == "amod" and s.fine[i] == "JJ" and s.pos[s.heads[i]] == "NOUN"}
    return len(heads) >= 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent.parent / "shared" / "data" / "sugarcrepe")
    parser.add_argument("--limit", type=int, default=None, help="captions to use (default all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.data.is_dir():
        args.data = Path("/work/shared/data/sugarcrepe")
    old = load_old_generators()
    captions = read_captions(args.data)[:args.limit]
    old_docs, parsed, tagging = tag_both(captions)
    for p, (_, pos) in zip(parsed, old_docs, strict=True):
        _OLD_POS[p.tokens] = tuple(pos)
    legacy = [old.TaggedSentence.of(t, p) for t, p in old_docs]
    print(f"SugarCrepe positives: {len(captions)} unique captions from {args.data}")

    order = list(range(len(parsed)))
    random.Random(args.seed).shuffle(order)
    pairs = [(order[k], order[k + 1]) for k in range(0, len(order) - 1, 2)]
    items = [(parsed[i], parsed[j]) for i, j in pairs]
    legacy_of = {id(item): (legacy[i], legacy[j]) for item, (i, j) in zip(items, pairs, strict=True)}
    facts = WordFacts.of(parsed)

    old_context = old.NegativeContext(old.build_vocabulary(legacy))
    new_context = new.NegativeContext.of_corpus(parsed)

    def old_generator(name: str) -> Any:
        return lambda item, rng: old.GENERATORS[name](*legacy_of[id(item)], rng, old_context)

    def new_generator(name: str) -> Any:
        return lambda item, rng: GENERATORS[name](item[0], item[1], rng, new_context)

    started = time.perf_counter()
    reports = audit(items, {f"old {n}": old_generator(n) for n in ("swap_across", "swap_within", "replace")}
                    | {f"new {n}": new_generator(n) for n in GENERATORS}, seed=args.seed, facts=facts)
    print(f"\n1. audit on {len(items)} CLIC pairs ({time.perf_counter() - started:.0f} s); rates in % of negatives "
          f"made, flags: {', '.join(FLAGS)}")
    print(format_table(reports))

    print("\n2. SugarCrepe swap_att: human negative reachable by the swap generators")
    reach = reachability(args.data, old, load_tagger(), args.limit)
    print(f"   old {100 * reach['old']:.1f} % | new {100 * reach['new']:.1f} % of {reach['items']} items")

    print("\n3. replace on a colour word gives a colour")
    share = colour_share(parsed, legacy, old)
    for key in ("old", "new"):
        value = share[key]["to_colour"]
        print(f"   {key}: {'n/a' if value is None else f'{100 * value:.1f} %'} of "
              f"{share[key]['colour_draws']} colour draws")

    print("\n4. coverage of the new generators where they apply (single captions)")
    rng = random.Random(args.seed)
    for name, applies in (("swap_relation", has_relation), ("swap_attribute", has_two_attributes)):
        eligible = [s for s in parsed if applies(s)]
        made = sum(GENERATORS[name](s, s, rng, new_context) is not None for s in eligible)
        print(f"   {name}: {made}/{len(eligible)} = {100 * made / max(1, len(eligible)):.1f} % of captions with "
              f"{'a relation' if name == 'swap_relation' else 'two adjective-noun phrases'}")

    print("\n5. ingest tagging, captions per CPU-second: today's tagger-only "
          f"{tagging['old_per_cpu_s']} | with parser and lemmatizer {tagging['new_per_cpu_s']} | "
          f"ratio {tagging['ratio']}x (target >= 0.6)")


if __name__ == "__main__":
    main()
