"""CSV/TSV records that survive bad quoting: a record that does not parse costs that one record.

Python's csv module, left lenient, lets an unterminated quote swallow every following line into one field,
and a field over 131,072 characters aborts the whole file. Here the reader is strict (an unterminated quote
is an error, not a silent merge), the field limit is lifted while a record is parsed, and after a bad record
that spanned several lines parsing resumes on the line after its first line, so the rows it swallowed are
read on their own.
"""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# As large as the C long behind csv.field_size_limit allows: one long caption is a row problem, not a file one.
_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)
_BOM = b"\xef\xbb\xbf"
# A carriage return that ends a line on its own (old Mac files); text mode with newline="" splits there too.
_LONE_CR = re.compile(rb"(?<=\r)(?!\n)")


@dataclass(frozen=True)
class CsvRecord:
    line: int  # the record's first physical line (1-based; the header is line 1)
    fields: list[str] | None  # None when the record does not parse
    error: str | None = None  # csv's message when it does not parse
    lines: int = 1  # physical lines the record spanned (before the error, for a bad one)
    first_line: str = ""  # its first physical line, for the rejects table


class _Lines:
    """Physical lines decoded as UTF-8 with surrogateescape (so one bad byte spoils one row), with their
    numbers and byte offsets, so that parsing can restart after any line."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.number = 0  # lines handed out so far
        self.offset = 0  # byte offset just after the last line handed out
        self.record_first_end = 0  # byte offset after the current record's first line
        self.record_first_text = ""
        self._record_started = False
        self._pieces: list[bytes] = []

    def start_record(self) -> None:
        self._record_started = False

    def rewind(self, number: int, offset: int) -> None:
        """Continue with the line after line `number`, which ended at byte `offset`."""
        self.handle.seek(offset)
        self.number, self.offset, self._pieces = number, offset, []

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if not self._pieces:
            line = self.handle.readline()
            if not line:
                raise StopIteration
            first_cr = line.find(b"\r")
            lone_cr = first_cr != -1 and first_cr != len(line) - 2  # other than the one in a final \r\n
            self._pieces = [piece for piece in _LONE_CR.split(line) if piece] if lone_cr else [line]
        piece = self._pieces.pop(0)
        at_start = self.offset == 0
        self.offset += len(piece)
        self.number += 1
        text = (piece.removeprefix(_BOM) if at_start else piece).decode("utf-8", errors="surrogateescape")
        if not self._record_started:
            self._record_started = True
            self.record_first_end, self.record_first_text = self.offset, text
        return text


def csv_records(path: Path, delimiter: str) -> Iterator[CsvRecord]:
    """Every record of a delimited file, in order, the header first; bad ones come back with `error` set."""
    with path.open("rb") as handle:
        lines = _Lines(handle)
        reader = csv.reader(lines, delimiter=delimiter, strict=True)
        while True:
            first = lines.number + 1
            lines.start_record()
            fields: list[str] | None = None
            error: str | None = None
            previous_limit = csv.field_size_limit(_FIELD_LIMIT)
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                error = str(err)
            finally:
                csv.field_size_limit(previous_limit)
            spanned = lines.number - first + 1
            yield CsvRecord(first, fields, error, spanned, lines.record_first_text)
            if error is not None and spanned > 1:
                lines.rewind(first, lines.record_first_end)
