"""Metadata filters, applied to both retrievers before fusion: a filtered-out chunk can never appear."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from rag.core.errors import ConfigError
from rag.core.types import DOC_TYPES, Chunk, DocumentMeta


@dataclass(frozen=True)
class Filters:
    """Empty fields do not filter. `sources` match the document's issuer/source case-insensitively."""

    types: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    year_min: int | None = None
    year_max: int | None = None
    doc_ids: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.types) - set(DOC_TYPES))
        if unknown:
            raise ConfigError(f"unknown document type {unknown[0]!r} in filters; use one of {', '.join(DOC_TYPES)}")
        if self.year_min is not None and self.year_max is not None and self.year_min > self.year_max:
            raise ConfigError(f"filter year range is empty: {self.year_min} > {self.year_max}")

    @classmethod
    def of(
        cls,
        *,
        types: Iterable[str] = (),
        sources: Iterable[str] = (),
        year_min: int | None = None,
        year_max: int | None = None,
        doc_ids: Iterable[str] = (),
    ) -> Filters:
        return cls(
            frozenset(t.strip().lower() for t in types),
            frozenset(s.strip().casefold() for s in sources),
            year_min,
            year_max,
            frozenset(doc_ids),
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Filters:
        if not data:
            return cls()
        allowed = {"types", "sources", "year_min", "year_max", "doc_ids"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ConfigError(f"unknown filter {unknown[0]!r}; filters are {', '.join(sorted(allowed))}")
        return cls.of(
            types=data.get("types", ()),
            sources=data.get("sources", ()),
            year_min=data.get("year_min"),
            year_max=data.get("year_max"),
            doc_ids=data.get("doc_ids", ()),
        )

    @property
    def empty(self) -> bool:
        return not (self.types or self.sources or self.doc_ids) and self.year_min is None and self.year_max is None

    def accepts(self, doc_id: str, meta: DocumentMeta) -> bool:
        if self.types and meta.doc_type not in self.types:
            return False
        if self.sources and meta.source.casefold() not in self.sources:
            return False
        if self.doc_ids and doc_id not in self.doc_ids:
            return False
        if self.year_min is not None and (meta.year is None or meta.year < self.year_min):
            return False
        return not (self.year_max is not None and (meta.year is None or meta.year > self.year_max))

    def mask(self, chunks: Sequence[Chunk], metas: Mapping[str, DocumentMeta]) -> npt.NDArray[np.bool_] | None:
        """Which chunks pass, or None when nothing is filtered."""
        if self.empty:
            return None
        verdict = {doc_id: self.accepts(doc_id, meta) for doc_id, meta in metas.items()}
        return np.fromiter((verdict.get(c.doc_id, False) for c in chunks), dtype=np.bool_, count=len(chunks))
