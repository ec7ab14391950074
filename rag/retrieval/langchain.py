"""The hybrid searcher as a LangChain retriever, so it drops into any `langchain_core` chain.

retriever = ClinragRetriever.from_index("indexes/demo", k=5)
docs = retriever.invoke("first-line treatment for cystitis")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from rag.core.types import Evidence
from rag.retrieval.filters import Filters
from rag.retrieval.protocols import Mode
from rag.retrieval.search import Searcher


class ClinragRetriever(BaseRetriever):
    """Each Document carries the chunk text and, in metadata, its source, pages and retriever ranks."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    searcher: Any  # a rag.retrieval.search.Searcher (Any: pydantic need not validate it)
    k: int = 5
    mode: Mode = "hybrid"
    filters: Filters | None = None

    @classmethod
    def from_index(cls, index_dir: str | Path, **kwargs: Any) -> ClinragRetriever:
        return cls(searcher=Searcher.load(index_dir), **kwargs)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        evidence: list[Evidence] = self.searcher.search(query, k=self.k, filters=self.filters, mode=self.mode)
        return [to_document(e) for e in evidence]


def to_document(evidence: Evidence) -> Document:
    metadata = evidence.to_json()
    text = metadata.pop("text")
    return Document(page_content=text, metadata=metadata, id=evidence.chunk.chunk_id)
