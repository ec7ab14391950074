"""clinrag: retrieval-augmented clinical question answering with cited, checked answers.

The names a user needs are importable from here (`from rag import Engine, Searcher, Settings, build_index`); each
is imported on first use, so `import rag` loads no model and no heavy library. The packages, by role (each one's
docstring says what it owns and what it may import; `.importlinter` holds the rules):

    core -> text -> index | models -> retrieval | checking -> answering -> datasets -> training -> evaluation -> cli

`indexer` (the top-level builder) stands beside them, using core, text, index and models.
"""

from __future__ import annotations

import importlib
from typing import Any

from rag.core.version import __version__

# name -> the module that defines it; resolved on first access (PEP 562), so importing `rag` stays cheap.
_PUBLIC = {
    "Engine": "rag.answering.engine",
    "Answer": "rag.answering.answer",
    "load_patient": "rag.answering.patient",
    "Patient": "rag.answering.patient",
    "Searcher": "rag.retrieval.search",
    "ShardedSearcher": "rag.retrieval.sharded",
    "open_searcher": "rag.retrieval.sharded",
    "Filters": "rag.retrieval.filters",
    "load_reranker": "rag.retrieval.rerank",
    "ClinragRetriever": "rag.retrieval.langchain",
    "NLIVerifier": "rag.checking.verifier",
    "Settings": "rag.core.config",
    "IndexSettings": "rag.core.config",
    "RetrievalSettings": "rag.core.config",
    "GeneratorSettings": "rag.core.config",
    "AnswerSettings": "rag.core.config",
    "load_settings": "rag.core.config",
    "Evidence": "rag.core.types",
    "ClinragError": "rag.core.errors",
    "verify_bundle": "rag.index.verify",
    "verify_sharded": "rag.index.verify",
    "build_index": "indexer.build",
    "add_sources": "indexer.build",
    "remove_from_index": "indexer.build",
    "build_sharded_index": "indexer.sharded",
    "add_to_sharded": "indexer.sharded",
    "remove_from_sharded": "indexer.sharded",
}

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'rag' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
