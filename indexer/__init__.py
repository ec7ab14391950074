"""Builds and maintains clinrag index bundles: loaders, chunker, de-duplication, incremental and sharded builds.

    from indexer import build_index, add_sources, remove_from_index, verify_bundle

May import: `rag.core`, `rag.text`, `rag.index` and `rag.models` (the `clinrag index` command lives in `rag.cli`).
"""

from indexer.build import add_sources, build_index, remove_from_index
from indexer.report import BuildReport, ShardedBuildReport
from rag.index.verify import VerifyReport, verify_bundle

__all__ = [
    "BuildReport",
    "ShardedBuildReport",
    "VerifyReport",
    "add_sources",
    "build_index",
    "remove_from_index",
    "verify_bundle",
]
