"""What a build, add or remove reports: counts, vectors reused / cached / embedded, failures and timings.

One base for a single bundle's report and a sharded index's, so both print and exit alike (`clinrag index ...`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from indexer.vectors import VectorStats
from rag.core.types import LoadFailure
from rag.index.sparse import CorpusStats


@dataclass(frozen=True)
class ShardResult:
    """What one shard task reports back: its BM25 statistics and how its vectors were found."""

    index: int
    documents: int
    chunks: int
    searchable: int
    stats: CorpusStats
    vectors: VectorStats
    seconds: float


@dataclass(frozen=True, kw_only=True)
class IndexReport:
    """The counts every build reports; exit code 1 when a source failed (everything else was indexed)."""

    directory: str
    committed: bool
    sources: int = 0
    documents: int = 0
    chunks: int = 0
    searchable_chunks: int = 0
    duplicates: int = 0
    vectors_cached: int = 0
    vectors_embedded: int = 0
    failures: tuple[LoadFailure, ...] = ()
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    def corpus_json(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "chunks": self.chunks,
            "searchable_chunks": self.searchable_chunks,
            "duplicates": self.duplicates,
        }

    def outcome_json(self) -> dict[str, Any]:
        return {
            "failures": [f.to_json() for f in self.failures],
            "seconds": round(self.seconds, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


@dataclass(frozen=True, kw_only=True)
class BuildReport(IndexReport):
    """A single bundle's build: sources read anew, unchanged (reused) or removed; vectors reused from the old
    generation, taken from the embedding cache or embedded."""

    sources_loaded: int = 0
    sources_unchanged: int = 0
    sources_removed: int = 0
    vectors_reused: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "committed": self.committed,
            "sources": self.sources,
            "sources_loaded": self.sources_loaded,
            "sources_unchanged": self.sources_unchanged,
            "sources_removed": self.sources_removed,
            **self.corpus_json(),
            "vectors": {
                "reused": self.vectors_reused,
                "cached": self.vectors_cached,
                "embedded": self.vectors_embedded,
            },
            **self.outcome_json(),
        }


@dataclass(frozen=True, kw_only=True)
class ShardedBuildReport(IndexReport):
    """A sharded index's build: the shard count, the Ray address used (None: in this process) and each shard's."""

    n_shards: int
    ray: str | None
    shards: tuple[ShardResult, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "committed": self.committed,
            "shards": self.n_shards,
            "ray": self.ray,
            "sources": self.sources,
            **self.corpus_json(),
            "vectors": {"cached": self.vectors_cached, "embedded": self.vectors_embedded},
            "per_shard": [
                {
                    "shard": s.index,
                    "documents": s.documents,
                    "searchable_chunks": s.searchable,
                    "embedded": s.vectors.embedded,
                    "seconds": round(s.seconds, 3),
                }
                for s in self.shards
            ],
            **self.outcome_json(),
        }
