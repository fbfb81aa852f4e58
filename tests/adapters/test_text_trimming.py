"""Training encodes captions on the batch's used context only; the embeddings must be encode_text's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from toolkit.adapters.open_clip_adapter import OpenClipAdapter, trim_padding

TEXTS = ["a red circle.", "there is a blue square to the left of a red circle and a green star above them."]


@pytest.fixture
def adapter(tiny_config_path: Path) -> OpenClipAdapter:
    torch.manual_seed(0)
    return OpenClipAdapter.create(str(tiny_config_path), None)


def test_trimmed_encoding_is_encode_text_on_fewer_columns(adapter: OpenClipAdapter) -> None:
    tokens = adapter.tokenize(TEXTS)
    trimmed = trim_padding(tokens)
    assert trimmed.shape[1] == int((tokens != 0).sum(dim=1).max()) < tokens.shape[1]
    with torch.no_grad():
        for normalize in (True, False):
            torch.testing.assert_close(adapter.encode_text_trimmed(tokens, normalize),
                                       adapter.encode_text(tokens, normalize))


def test_gradients_match_the_full_context(adapter: OpenClipAdapter) -> None:
    tokens = adapter.tokenize(TEXTS)
    grads = []
    for encode in (adapter.encode_text, adapter.encode_text_trimmed):
        adapter.model.zero_grad()
        encode(tokens).sum().backward()
        grads.append(adapter.model.positional_embedding.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
    # the premise: on the full context the padding columns get no gradient, so dropping them loses nothing
    assert grads[0][trim_padding(tokens).shape[1]:].abs().sum() == 0 < grads[0].abs().sum()


def test_pooling_over_every_position_is_not_trimmed(adapter: OpenClipAdapter) -> None:
    # "last" pools the final column, which trimming would move: the full context must be encoded.
    adapter.model.text_pool_type = "last"
    tokens = adapter.tokenize(TEXTS)
    with torch.no_grad():
        assert torch.equal(adapter.encode_text_trimmed(tokens), adapter.encode_text(tokens))
