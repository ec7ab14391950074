"""Search over a bundle: modes, evidence fields, filters before fusion, bad queries, ANN indexes."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer import add_sources, build_index
from rag.core.config import IndexSettings, RetrievalSettings
from rag.core.errors import ConfigError
from rag.retrieval.filters import Filters
from rag.retrieval.search import Searcher
from rag.testing import HashEmbedder, LexicalReranker

DOCS = {
    "uti-2010.md": ("Cystitis", "IDSA", 2010, "guideline", "Nitrofurantoin for five days treats cystitis."),
    "uti-2019.md": ("Cystitis update", "NICE", 2019, "guideline", "Nitrofurantoin or trimethoprim for cystitis."),
    "uti-review.md": ("Cystitis trial", "PubMed", 2015, "literature", "A trial of nitrofurantoin in cystitis."),
    "uti-leaflet.md": ("Bladder infection", "MedlinePlus", 2021, "consumer-health", "Cystitis is a bladder infection."),
    "asthma.md": ("Asthma", "GINA", 2024, "guideline", "Budesonide-formoterol relieves asthma symptoms."),
}


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("retrieve")
    src = root / "src"
    src.mkdir()
    for name, (title, issuer, year, kind, body) in DOCS.items():
        (src / name).write_text(
            f"---\ntitle: {title}\nissuer: {issuer}\nyear: {year}\ntype: {kind}\n---\n{body}\n", encoding="utf-8"
        )
    settings = IndexSettings.model_validate({"cache_dir": str(root / "cache")})
    build_index([src], root / "index", settings, embedder=HashEmbedder(dim=32, max_tokens=64))
    return root / "index"


@pytest.fixture(scope="module")
def searcher(index: Path) -> Searcher:
    return Searcher.load(index, HashEmbedder(dim=32, max_tokens=64))


def test_hybrid_evidence_explains_itself(searcher: Searcher) -> None:
    evidence = searcher.search("nitrofurantoin cystitis", k=3)
    assert len(evidence) == 3
    top = evidence[0]
    assert "nitrofurantoin" in top.chunk.text.lower()
    assert set(top.retrievers) <= {"bm25", "dense"} and top.retrievers
    assert all(hit.rank >= 1 for hit in top.retrievers.values())
    assert [e.score for e in evidence] == sorted((e.score for e in evidence), reverse=True)
    as_json = top.to_json()
    assert as_json["year"] == top.meta.year and as_json["retrievers"]


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_modes_return_only_their_retrievers(searcher: Searcher, mode: str) -> None:
    evidence = searcher.search("asthma symptoms budesonide", k=2, mode=mode)  # type: ignore[arg-type]
    expected = {"bm25", "dense"} if mode == "hybrid" else {mode}
    assert evidence and all(set(e.retrievers) <= expected for e in evidence)
    assert evidence[0].meta.title == "Asthma"


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_filters_apply_before_fusion(searcher: Searcher, mode: str) -> None:
    only_2019 = Filters.of(year_min=2016, year_max=2020)
    evidence = searcher.search("nitrofurantoin cystitis", k=10, filters=only_2019, mode=mode)  # type: ignore[arg-type]
    assert {e.meta.title for e in evidence} <= {"Cystitis update"}
    by_type = searcher.search("cystitis", k=10, filters=Filters.of(types=["literature", "consumer-health"]), mode=mode)  # type: ignore[arg-type]
    assert by_type and {e.meta.doc_type for e in by_type} <= {"literature", "consumer-health"}
    by_source = searcher.search("cystitis", k=10, filters=Filters.of(sources=["nice"]), mode=mode)  # type: ignore[arg-type]
    assert {e.meta.source for e in by_source} <= {"NICE"}
    by_doc = searcher.search("cystitis", k=10, filters=Filters.of(doc_ids=["asthma"]), mode=mode)  # type: ignore[arg-type]
    assert {e.chunk.doc_id for e in by_doc} <= {"asthma"}
    nothing = searcher.search("cystitis", k=10, filters=Filters.of(year_min=2090), mode=mode)  # type: ignore[arg-type]
    assert nothing == []


def test_bad_filters_are_errors() -> None:
    with pytest.raises(ConfigError, match="unknown document type"):
        Filters.of(types=["blog"])
    with pytest.raises(ConfigError, match="year range"):
        Filters.of(year_min=2020, year_max=2010)
    with pytest.raises(ConfigError, match="unknown filter"):
        Filters.from_json({"yaer_min": 2000})


def test_bad_queries(searcher: Searcher) -> None:
    for query in ("", "   ", "?!...", "\x00\x01"):
        with pytest.raises(ConfigError, match="query"):
            searcher.search(query)
    long = "cystitis " + "z" * 100_000
    assert searcher.search(long, k=2)
    assert searcher.search("nitrofurantoin\x00\x1b[31m cystitis", k=1)
    with pytest.raises(ConfigError, match="k must be positive"):
        searcher.search("cystitis", k=0)


def test_collapse_and_mmr_settings(index: Path) -> None:
    settings = RetrievalSettings(collapse_documents=True, mmr=True, mmr_lambda=0.5)
    searcher = Searcher.load(index, HashEmbedder(dim=32, max_tokens=64), settings)
    evidence = searcher.search("cystitis nitrofurantoin", k=4)
    doc_ids = [e.chunk.doc_id for e in evidence]
    assert len(doc_ids) == len(set(doc_ids)) == 4


def test_query_vectors_are_cached(searcher: Searcher) -> None:
    dense = searcher.retrievers["dense"]
    first = dense.query_vector("asthma")  # type: ignore[attr-defined]
    assert dense.query_vector("asthma") is first  # type: ignore[attr-defined]


def test_reloaded_searcher_follows_the_newest_committed_generation(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, (title, body) in {first: ("Asthma", "Budesonide relieves asthma."),
                                  second: ("Gout", "Colchicine treats acute gout flares.")}.items():  # fmt: skip
        folder.mkdir()
        (folder / f"{title.lower()}.md").write_text(f"---\ntitle: {title}\n---\n{body}\n", encoding="utf-8")
    embedder = HashEmbedder(dim=32, max_tokens=64)
    settings = IndexSettings.model_validate({"cache_dir": str(tmp_path / "cache")})
    build_index([first], tmp_path / "index", settings, embedder=embedder)
    reranker = LexicalReranker()
    searcher = Searcher.load(tmp_path / "index", embedder, RetrievalSettings(k=3), reranker)
    assert searcher.reloaded() is searcher  # nothing committed since it loaded

    add_sources(tmp_path / "index", [second], embedder=embedder)
    newer = searcher.reloaded()
    assert newer is not searcher
    assert newer.bundle.manifest["generation"] != searcher.bundle.manifest["generation"]
    assert newer.settings is searcher.settings and newer.loaded_reranker is reranker
    assert newer.retrievers["dense"].embedder is embedder  # type: ignore[attr-defined]
    assert "Gout" in {e.meta.title for e in newer.search("colchicine gout")}
    assert "Gout" not in {e.meta.title for e in searcher.search("colchicine gout")}  # the old one is unchanged
    assert newer.reloaded() is newer


def test_hnsw_bundle_with_filters(tmp_path: Path, index: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(60):
        kind = "guideline" if i % 2 else "literature"
        (src / f"d{i}.md").write_text(f"---\ntype: {kind}\nyear: {2000 + i % 20}\n---\nTopic {i} drug{i} dose.\n")
    settings = IndexSettings.model_validate({"cache_dir": str(tmp_path / "cache"), "dense": {"kind": "hnsw"}})
    build_index([src], tmp_path / "index", settings, embedder=HashEmbedder(dim=32, max_tokens=64))
    searcher = Searcher.load(tmp_path / "index", HashEmbedder(dim=32, max_tokens=64))
    evidence = searcher.search("drug7 dose", k=5, mode="dense", filters=Filters.of(types=["guideline"]))
    assert evidence and all(e.meta.doc_type == "guideline" for e in evidence)


def test_langchain_retriever(searcher: Searcher) -> None:
    from langchain_core.retrievers import BaseRetriever

    from rag.retrieval.langchain import ClinragRetriever

    retriever = ClinragRetriever(searcher=searcher, k=2, filters=Filters.of(types=["guideline"]))
    assert isinstance(retriever, BaseRetriever)
    docs = retriever.invoke("nitrofurantoin cystitis")
    assert 1 <= len(docs) <= 2
    assert all(d.metadata["type"] == "guideline" for d in docs)
    assert "nitrofurantoin" in docs[0].page_content.lower() and docs[0].metadata["retrievers"]
