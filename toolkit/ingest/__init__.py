"""Ingest: stream a source, validate each row, tag captions once, store everything idempotently."""

from toolkit.ingest.pipeline import IngestReport, StrictIngestError, WorkspaceError, ingest_source
from toolkit.ingest.rows import SourceError
from toolkit.ingest.tagging import DEFAULT_TAGGER, TaggerError, load_tagger

__all__ = ["DEFAULT_TAGGER", "IngestReport", "SourceError", "StrictIngestError", "TaggerError",
           "WorkspaceError", "ingest_source", "load_tagger"]
