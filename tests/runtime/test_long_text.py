"""Long queries: the runtime tokenizes only what the context keeps, and gives exactly the ids of the whole text."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import sugarcrepe_captions
from toolkit.runtime import tokenizer as tokenizer_module
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


def test_a_10_mb_query_tokenizes_only_what_the_context_keeps(bundle_like: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted, not timed: on main every piece of the 10 MB was split and run through BPE (32 s here),
    for 77 ids. Now at most context - 1 pieces are, whatever the length."""
    tokenizer = ClipBpeTokenizer(TokenizerSettings("bpe.txt.gz", 77), bundle_like)
    split: list[int] = []
    bpe_calls: list[str] = []
    real_pre_tokenize, real_bpe = tokenizer_module.pre_tokenize, tokenizer.bpe

    def counting_pre_tokenize(*args: object, **kwargs: object) -> list[str]:
        pieces = real_pre_tokenize(*args, **kwargs)  # type: ignore[arg-type]
        split.append(len(pieces))
        return pieces

    def counting_bpe(token: str) -> list[str]:
        bpe_calls.append(token)
        return real_bpe(token)

    monkeypatch.setattr(tokenizer_module, "pre_tokenize", counting_pre_tokenize)
    monkeypatch.setattr(tokenizer, "bpe", counting_bpe)
    query = ("a red cube left of a blue ball, " * 320_000)[:10_000_000]
    ids = tokenizer([query])
    assert ids.shape == (1, 77) and ids[0, -1] == tokenizer.eot_id
    assert split == [76] and len(bpe_calls) <= 76
    assert (ids == tokenizer([query[:1000]])).all()  # the cut text's ids, as CLIP's truncation gives
