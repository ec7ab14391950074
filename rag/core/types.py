"""The data types that flow through clinrag.

SourceDocument (one guideline PDF, one abstract, one web passage) -> Chunk -> index bundle -> Hit -> Evidence.
Everything here is a small frozen dataclass with a plain-JSON round trip (`to_json` / `from_json`), so the
bundle on disk is readable by any tool and nothing is ever pickled.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

DocType = Literal["guideline", "literature", "consumer-health"]
DOC_TYPES: tuple[str, ...] = get_args(DocType)


def as_doc_type(value: object, *, where: str = "") -> DocType:
    """Validate a document type coming from a file or flag."""
    text = str(value).strip().lower()
    if text not in DOC_TYPES:
        place = f"{where}: " if where else ""
        raise ValueError(f"{place}unknown document type {value!r}; use one of {', '.join(DOC_TYPES)}")
    return text  # type: ignore[return-value]


@dataclass(frozen=True)
class DocumentMeta:
    """What a citation needs to say about where a text came from."""

    title: str
    doc_type: DocType
    source: str = ""  # the issuer (WHO, CDC, NICE) or the collection (PubMed, MedlinePlus)
    year: int | None = None
    url: str | None = None
    licence: str | None = None
    # Loader-specific facts kept for filtering and display (e.g. MedQuAD's qtype, PubMed MeSH terms).
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "type": self.doc_type,
            "source": self.source,
            "year": self.year,
            "url": self.url,
            "licence": self.licence,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DocumentMeta:
        return cls(
            title=str(data.get("title", "")),
            doc_type=as_doc_type(data.get("type", "literature")),
            source=str(data.get("source", "")),
            year=parse_year(data.get("year")),
            url=data.get("url") or None,
            licence=data.get("licence") or None,
            extra={str(k): str(v) for k, v in (data.get("extra") or {}).items()},
        )


@dataclass(frozen=True)
class PageSpan:
    """Page `number` (1-based, as printed by a PDF viewer) covers text[start:end]."""

    number: int
    start: int
    end: int


@dataclass(frozen=True)
class SectionSpan:
    """The heading path (without the document title) that governs text[start:end]."""

    path: tuple[str, ...]
    start: int
    end: int


@dataclass(frozen=True)
class SourceDocument:
    """One loaded document: the text exactly as indexed, plus where pages and sections fall in it.

    `sections` cover the text in order without overlap; text outside every section belongs to the
    document root (empty path). `pages` is empty for sources without pages.
    """

    doc_id: str
    text: str
    meta: DocumentMeta
    source_path: str
    pages: tuple[PageSpan, ...] = ()
    sections: tuple[SectionSpan, ...] = ()

    def page_at(self, offset: int) -> int | None:
        """The page that holds character `offset`, or None for unpaginated text."""
        if not self.pages:
            return None
        starts = [p.start for p in self.pages]
        i = max(0, bisect.bisect_right(starts, offset) - 1)
        return self.pages[i].number


@dataclass(frozen=True)
class LoadFailure:
    """A source (or one record in it) that could not be loaded, and why. Never fatal to a build."""

    path: str
    reason: str
    record: str | None = None  # line number or record id inside a multi-document file

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason, "record": self.record}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LoadFailure:
        return cls(path=str(data["path"]), reason=str(data["reason"]), record=data.get("record"))


@dataclass(frozen=True)
class LoadResult:
    """What a loader returns for one source file: the documents it could read and what it could not."""

    documents: tuple[SourceDocument, ...] = ()
    failures: tuple[LoadFailure, ...] = ()


@dataclass(frozen=True)
class Chunk:
    """A passage small enough for the embedder, with everything needed to cite it.

    `text` is exactly `document.text[char_start:char_end]`; `breadcrumb` ("Title > Section") is prepended
    for embedding and BM25 (`indexed_text`) so that a passage keeps the context its heading gives it.
    `chunk_id` hashes the document id, offsets and text: stable across runs and machines.
    `content_hash` hashes only `indexed_text`: the key of the embedding cache and of exact de-duplication.
    """

    chunk_id: str
    doc_id: str
    text: str
    breadcrumb: str
    section_path: tuple[str, ...]
    char_start: int
    char_end: int
    page_start: int | None
    page_end: int | None
    n_tokens: int  # tokens of `indexed_text` under the embedder's tokenizer, special tokens included
    content_hash: str

    @property
    def indexed_text(self) -> str:
        return f"{self.breadcrumb}\n{self.text}" if self.breadcrumb else self.text

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.chunk_id,
            "doc_id": self.doc_id,
            "text": self.text,
            "breadcrumb": self.breadcrumb,
            "section_path": list(self.section_path),
            "char_start": self.char_start,
            "char_end": self.char_end,
            "page_start": self.page_start,
            "page_end": self.page_end,
            "n_tokens": self.n_tokens,
            "content_hash": self.content_hash,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Chunk:
        return cls(
            chunk_id=str(data["id"]),
            doc_id=str(data["doc_id"]),
            text=str(data["text"]),
            breadcrumb=str(data.get("breadcrumb", "")),
            section_path=tuple(data.get("section_path") or ()),
            char_start=int(data["char_start"]),
            char_end=int(data["char_end"]),
            page_start=_optional_int(data.get("page_start")),
            page_end=_optional_int(data.get("page_end")),
            n_tokens=int(data.get("n_tokens", 0)),
            content_hash=str(data["content_hash"]),
        )


def _optional_int(value: object) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


_YEAR = re.compile(r"\b(19\d\d|20\d\d)\b")


def parse_year(value: object) -> int | None:
    """The first plausible year (1900-2099) in `value`: 2016, "2016", "2016-05-01", "May 2016"."""
    if isinstance(value, int):
        return value if 1900 <= value <= 2099 else None
    match = _YEAR.search(str(value or ""))
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class RetrieverHit:
    """Where one retriever placed a chunk: 1-based rank and that retriever's own score."""

    rank: int
    score: float


@dataclass(frozen=True)
class Evidence:
    """A retrieved chunk with its document's metadata and why it was found (each retriever's rank and score)."""

    chunk: Chunk
    meta: DocumentMeta
    score: float  # the score that ordered the results (fused, or the reranker's when reranked)
    retrievers: Mapping[str, RetrieverHit] = field(default_factory=dict)
    # Documents whose identical or near-identical passage the index collapsed into this chunk: the chunk stands
    # for each of them at its rank (evaluation credits them, references list them as further sources).
    also_in: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk.chunk_id,
            "doc_id": self.chunk.doc_id,
            "title": self.meta.title,
            "breadcrumb": self.chunk.breadcrumb,
            "type": self.meta.doc_type,
            "source": self.meta.source,
            "year": self.meta.year,
            "url": self.meta.url,
            "pages": [self.chunk.page_start, self.chunk.page_end] if self.chunk.page_start is not None else None,
            "char_span": [self.chunk.char_start, self.chunk.char_end],
            "score": round(self.score, 6),
            "retrievers": {name: {"rank": h.rank, "score": round(h.score, 6)} for name, h in self.retrievers.items()},
            "also_in": list(self.also_in),
            "text": self.chunk.text,
        }
