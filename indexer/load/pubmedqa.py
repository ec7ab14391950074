"""Native PubMedQA JSON loader: `{pmid: {QUESTION, CONTEXTS, LABELS, MESHES, YEAR, ...}}`.

Only the question and the abstract's contexts are read. LONG_ANSWER, final_decision and the *_pred fields
are the answers to evaluation questions and must never reach an index.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from indexer.load.common import Overrides, clean_text, extra_string, fail
from rag.core.types import DocType, DocumentMeta, LoadFailure, LoadResult, SectionSpan, SourceDocument, parse_year

DEFAULT_TYPE: DocType = "literature"
CONTEXT_SEPARATOR = "\n\n"


def is_pubmedqa(data: object) -> bool:
    """True for a non-empty object whose values look like PubMedQA records."""
    if not isinstance(data, dict) or not data:
        return False
    sample = next(iter(data.values()))
    return isinstance(sample, dict) and "QUESTION" in sample and "CONTEXTS" in sample


def load_pubmedqa(path: Path, data: Mapping[str, object], overrides: Overrides) -> LoadResult:
    documents: list[SourceDocument] = []
    failures: list[LoadFailure] = []
    for pmid, record in data.items():
        problem = _problem(record) if isinstance(record, dict) else _NOT_OBJECT
        if not str(pmid).strip():
            problem = "record has an empty PMID as its key: key each record by its PubMed id"
        if problem or not isinstance(record, dict):
            failures.append(fail(path, problem, record=f"pmid {pmid}"))
            continue
        documents.append(_document(path, str(pmid).strip(), record, overrides))
    return LoadResult(documents=tuple(documents), failures=tuple(failures))


_NOT_OBJECT = "record is not a JSON object: expected {QUESTION, CONTEXTS, LABELS, ...}"


def _problem(record: Mapping[str, object]) -> str:
    contexts = record.get("CONTEXTS")
    if not isinstance(contexts, list) or not any(isinstance(c, str) and _clean(c) for c in contexts):
        return "record has no CONTEXTS text: add the abstract's contexts or drop the record"
    return ""


def _document(path: Path, pmid: str, record: Mapping[str, object], overrides: Overrides) -> SourceDocument:
    pairs = _labelled_contexts(_list(record.get("CONTEXTS")), _list(record.get("LABELS")))
    text, sections = _join_contexts(pairs)
    mesh = extra_string(record.get("MESHES") or [])
    meta = DocumentMeta(
        title=_clean(str(record.get("QUESTION") or "")) or f"PubMed {pmid}",
        doc_type=overrides.doc_type or DEFAULT_TYPE,
        source=overrides.source or "PubMed",
        year=parse_year(record.get("YEAR")),
        url=f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/",
        licence=overrides.licence,
        extra={"mesh": mesh} if mesh else {},
    )
    return SourceDocument(doc_id=f"pmid:{pmid}", text=text, meta=meta, source_path=str(path), sections=sections)


def _clean(text: str) -> str:
    """One line of text without control characters, which would otherwise reach chunks and prompts."""
    return " ".join(clean_text(text).split())


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _labelled_contexts(contexts: list[object], labels: list[object]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for i, context in enumerate(contexts):
        if isinstance(context, str) and _clean(context):
            label = _clean(str(labels[i])) if i < len(labels) and labels[i] is not None else ""
            pairs.append((_clean(context), label))
    return pairs


def _join_contexts(pairs: list[tuple[str, str]]) -> tuple[str, tuple[SectionSpan, ...]]:
    parts: list[str] = []
    sections: list[SectionSpan] = []
    cursor = 0
    for context, label in pairs:
        if parts:
            parts.append(CONTEXT_SEPARATOR)
            cursor += len(CONTEXT_SEPARATOR)
        if label:
            sections.append(SectionSpan(path=(label,), start=cursor, end=cursor + len(context)))
        parts.append(context)
        cursor += len(context)
    return "".join(parts), tuple(sections)
