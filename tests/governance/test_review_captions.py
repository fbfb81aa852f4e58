"""A review correction goes through ingest's caption rules: a correction that ingest would reject is refused
(exit 3, one line), the item stays open and the old caption stays active."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.helpers import review_failures, run_toolkit
from toolkit.catalog.models import Caption
from toolkit.governance.review import ReviewError, record_failures, record_verdict


@pytest.mark.parametrize(("correction", "reason"), [
    ("\u200b\u200b\u200b", "caption_"),  # only zero-width spaces: empty, no words
    ("A red cube. " * 10_000, "caption_too_long"),  # 120,000 characters
    ("A red\x00 cube.", "caption_"),  # a control character
    ("A red\x1b[31m cube.", "caption_"),
])
def test_a_correction_ingest_would_reject_is_refused(catalog, tmp_path, correction, reason):
    (item, *_) = record_failures(catalog, "run-1", "cand", *review_failures(catalog, tmp_path))
    with pytest.raises(ReviewError, match=reason):
        record_verdict(catalog, item, "caption_wrong", reviewer="rita", corrected_caption=correction)
    with catalog.session() as session:
        assert [c.status for c in session.scalars(select(Caption))] == ["active"]
    result = run_toolkit(["review", "record", str(item), "caption_wrong", "--corrected-caption", correction,
                          "--db", catalog.url])
    assert result.exit_code == 3 and "caption rules" in result.output, result.output[-500:]
    with catalog.session() as session:
        assert [c.status for c in session.scalars(select(Caption))] == ["active"]


def test_a_good_correction_is_normalised_as_ingest_does(catalog, tmp_path):
    (item, *_) = record_failures(catalog, "run-1", "cand", *review_failures(catalog, tmp_path))
    record_verdict(catalog, item, "caption_wrong", reviewer="rita", corrected_caption="  A red   cube. ")
    with catalog.session() as session:
        assert {c.text: c.status for c in session.scalars(select(Caption))}["A red cube."] == "active"
