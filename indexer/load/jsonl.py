"""BEIR corpus loader: one JSON object per line with `_id`, `title`, `text` and `metadata`."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from indexer.load.common import MAX_RECORD_BYTES, Overrides, build_meta, clean_text, fail, short_title
from rag.core.types import DocType, LoadFailure, LoadResult, SectionSpan, SourceDocument

DEFAULT_TYPE: DocType = "literature"
# Metadata keys that name the section a passage comes from. MedQuAD names it by question type ("treatment",
# "symptoms"): the same heading a consumer-health page gives it, and what tells its passages apart.
SECTION_KEYS = ("section", "qtype")


class RecordError(ValueError):
    """One line of a corpus that cannot become a document; the message says why and how to fix it."""


def load_beir_jsonl(path: Path, overrides: Overrides) -> LoadResult:
    """Every good line becomes a document; every bad line a failure with record="line N"."""
    documents: list[SourceDocument] = []
    failures: list[LoadFailure] = []
    first_line: dict[str, int] = {}
    source_path = str(path)
    with path.open("rb") as handle:
        for number, line in enumerate(_lines(handle), start=1):
            if line is not None and not line.strip():
                continue
            try:
                if line is None:
                    raise RecordError(
                        f"line longer than {MAX_RECORD_BYTES // 2**20} MB: not one passage; split the record"
                    )
                document = _document(line, source_path, overrides)
                previous = first_line.setdefault(document.doc_id, number)
                if previous != number:
                    raise RecordError(f"duplicate _id {document.doc_id!r} (first on line {previous}): make ids unique")
            except RecordError as exc:
                failures.append(fail(path, str(exc), record=f"line {number}"))
                continue
            documents.append(document)
    if not documents and not failures:
        failures.append(fail(path, "empty document: the corpus has no records; add JSON lines or remove the file"))
    return LoadResult(documents=tuple(documents), failures=tuple(failures))


def _lines(handle: BinaryIO) -> Iterator[bytes | None]:
    """The file's lines; None for a line over MAX_RECORD_BYTES, which is skipped without being held in memory."""
    while line := handle.readline(MAX_RECORD_BYTES + 1):
        if len(line) <= MAX_RECORD_BYTES or line.endswith(b"\n"):
            yield line
            continue
        while (rest := handle.readline(1 << 20)) and not rest.endswith(b"\n"):
            pass
        yield None


def _document(line: bytes, source_path: str, overrides: Overrides) -> SourceDocument:
    try:
        record = json.loads(line)
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
        raise RecordError(f"invalid JSON ({exc}): fix or delete the line") from exc
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}: write one object per line")
    raw_id = record.get("_id")
    doc_id = "" if raw_id is None else str(raw_id).strip()
    if not doc_id:
        raise RecordError('missing "_id": every record needs a unique "_id"')
    text = record.get("text")
    if not isinstance(text, str):
        raise RecordError(f'record {doc_id!r} has no "text" string: add the passage text')
    # Control characters would reach chunks and prompts: the text loaders drop them, and so does this one.
    body = clean_text(text).strip()
    if not body:
        raise RecordError(f'record {doc_id!r} has empty "text": add the passage text or drop the record')
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise RecordError(f'record {doc_id!r}: "metadata" must be a JSON object')
    title = " ".join(clean_text(str(record.get("title") or "")).split()) or short_title(body)
    try:
        meta = build_meta(metadata, title=title, default_type=DEFAULT_TYPE, overrides=overrides)
    except ValueError as exc:
        raise RecordError(f"record {doc_id!r}: {exc}") from exc
    label = next((str(metadata[key]).strip() for key in SECTION_KEYS if str(metadata.get(key) or "").strip()), "")
    sections = (SectionSpan((label[:1].upper() + label[1:],), 0, len(body)),) if label else ()
    return SourceDocument(doc_id=doc_id, text=body, meta=meta, source_path=source_path, sections=sections)
