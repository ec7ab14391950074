"""Finding evidence: the role protocols (`protocols`), the single-bundle `Searcher` (`search`), fusion, filters,
the cross-encoder reranker (`rerank`), the sharded searcher (`sharded`) and the LangChain retriever (`langchain`).

May import: `rag.core`, `rag.text`, `rag.index`, `rag.models`. Never training, evaluation or checking.
"""
