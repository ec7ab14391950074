"""Builds and maintains clinrag index bundles: loaders, chunker, de-duplication, incremental builds, CLI.

from indexer import build_index, add_sources, remove_from_index, verify_bundle
"""

from indexer.build import BuildReport, add_sources, build_index, remove_from_index
from rag.index.verify import VerifyReport, verify_bundle

__all__ = ["BuildReport", "VerifyReport", "add_sources", "build_index", "remove_from_index", "verify_bundle"]
