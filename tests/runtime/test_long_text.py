"""Long queries: the runtime tokenizes only what the context keeps, and gives exactly the ids of the whole text."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import sugarcrepe_captions
from toolkit.runtime.tokenizer import ClipBpeTokenizer, TokenizerSettings


@pytest.fixture(scope="module")
def bundle_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from open_clip.tokenizer import default_bpe

    folder = tmp_path_factory.mktemp("tok")
    shutil.copyfile(default_bpe(), folder / "bpe.txt.gz")
    return folder


def _long_captions() -> list[str]:
    """Real captions run together past any context, with the cut falling on every kind of piece boundary:
    inside a long word, a digit run, punctuation, contractions, specials, entities, line breaks."""
    captions = sugarcrepe_captions()
    joined = " ".join(captions[:40])
    return [
        joined,
        "\n".join(captions[40:80]),
        "A dog's toy isn't theirs; " * 40,
        "x" * 5000 + " a red cube",
        "1234567890" * 300,
        "!?.,;:" * 400 + " the end",
        "<start_of_text> " * 100,
        "&amp;amp; caf\u00c3\u00a9 \uff21\uff22 e\u0301 " * 100,
        "a <b>bold</b> move " * 60 + " &amp;",
        " ".join(captions[:3]),  # shorter than the context: nothing is cut
    ]


@pytest.mark.parametrize("context", [77, 32, 8])
def test_long_captions_give_the_ids_of_the_whole_text(bundle_like: Path, context: int) -> None:
    """Equal to open_clip's SimpleTokenizer, which tokenizes the whole text and then truncates."""
    import open_clip

    texts = _long_captions()
    ours = ClipBpeTokenizer(TokenizerSettings("bpe.txt.gz", context), bundle_like)(texts)
    reference = open_clip.SimpleTokenizer(context_length=context)(texts).numpy()
    mismatched = [texts[i][:60] for i in np.flatnonzero((ours != reference).any(axis=1))]
    assert mismatched == []


def test_a_10_mb_query_takes_about_its_cleaning(bundle_like: Path) -> None:
    """On main: 37 s on this machine (pre-tokenisation and BPE of all 10 MB, for 77 ids)."""
    tokenizer = ClipBpeTokenizer(TokenizerSettings("bpe.txt.gz", 77), bundle_like)
    query = ("a red cube left of a blue ball, " * 320_000)[:10_000_000]
    started = time.perf_counter()
    ids = tokenizer([query])
    elapsed = time.perf_counter() - started
    assert ids.shape == (1, 77) and ids[0, -1] == tokenizer.eot_id
    assert elapsed < 10, f"{elapsed:.1f} s for a 10 MB query"
