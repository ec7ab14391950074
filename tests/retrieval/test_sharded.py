"""Sharded indexes in one process: same results as the single bundle, integrity, updates, and a failed build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from indexer.build import build_index
from indexer.sharded import add_to_sharded, build_sharded_index, remove_from_sharded
from rag.core.config import IndexSettings, RetrievalSettings
from rag.core.errors import BundleError, BundleMismatchError, ConfigError
from rag.index.shards import SHARDED_MANIFEST, load_sharded, read_sharded_manifest, shard_of
from rag.index.sparse import BM25Index, CorpusStats, TermCounts
from rag.index.store import MANIFEST_CHECKSUM, manifest_bytes, manifest_checksum
from rag.index.verify import verify_sharded
from rag.retrieval.filters import Filters
from rag.retrieval.search import Searcher
from rag.retrieval.sharded import ShardedSearcher, merge_rankings, open_searcher
from rag.testing import HashEmbedder, LexicalReranker

SETTINGS = IndexSettings(use_cache=False, progress=False)
QUERIES = [
    "first line treatment for cystitis",
    "warfarin dose and renal monitor",
    "asthma therapy in children daily",
    "statin risk in a trial",
    "tuberculosis treatment weeks",
    "hypertension in adults dose",
]
TOPICS = ["cystitis", "warfarin", "asthma", "statin", "tuberculosis", "hypertension", "migraine", "copd"]


def write_corpus(path: Path, n_docs: int, seed: int = 0) -> Path:
    """A BEIR-style JSONL corpus with near-duplicate and exact-duplicate documents, like MedQuAD's."""
    rng = np.random.default_rng(seed)
    words = "dose daily first line therapy adults children risk trial renal weeks treatment monitor".split()
    rows = []
    for i in range(n_docs):
        topic = TOPICS[i % len(TOPICS)]
        body = " ".join(rng.choice(words, size=40)) + f" {topic} management. " + " ".join(rng.choice(words, size=30))
        rows.append({"_id": f"d{i:04d}", "title": f"{topic.title()} {i}", "text": body})
    for i in range(0, n_docs, 9):  # copies under another id: collapsed into the first, maybe across shards
        rows.append({"_id": f"copy{i:04d}", "title": rows[i]["title"] + " (copy)", "text": rows[i]["text"]})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, HashEmbedder]:
    root = tmp_path_factory.mktemp("sharded")
    corpus = write_corpus(root / "src" / "corpus.jsonl", 160)
    embedder = HashEmbedder(dim=48, max_tokens=48)
    build_index([corpus], root / "single", SETTINGS, embedder=embedder)
    build_sharded_index([corpus], root / "sharded", 4, SETTINGS, embedder=embedder)
    return root, corpus, root / "sharded", embedder


@pytest.mark.parametrize("mode", ["hybrid", "bm25", "dense"])
@pytest.mark.parametrize("fusion", ["convex", "rrf"])
def test_sharded_search_returns_the_single_bundles_top_10(built, mode: str, fusion: str) -> None:  # type: ignore[no-untyped-def]
    root, _, sharded, embedder = built
    settings = RetrievalSettings(fusion=fusion)  # type: ignore[arg-type]
    single = Searcher.load(root / "single", embedder, settings)
    shards = ShardedSearcher.load(sharded, embedder, settings)
    for query in QUERIES:
        a = [(e.chunk.chunk_id, e.score) for e in single.search(query, k=10, mode=mode)]  # type: ignore[arg-type]
        b = [(e.chunk.chunk_id, e.score) for e in shards.search(query, k=10, mode=mode)]  # type: ignore[arg-type]
        assert len(a) == 10
        assert a == b, (query, a, b)  # ties (many in this corpus) are broken by FAISS id on both sides


def test_reranked_search_reads_the_same_pool_as_the_single_bundle(built) -> None:  # type: ignore[no-untyped-def]
    root, _, sharded, embedder = built
    # A shallow head, so each retriever's own top 3 from below it join the pool on some queries.
    settings = RetrievalSettings(rerank_depth=3, rerank_each=3)
    single = Searcher.load(root / "single", embedder, settings, reranker=LexicalReranker())
    shards = ShardedSearcher.load(sharded, embedder, settings, reranker=LexicalReranker())
    grew = 0
    for query in QUERIES:
        a = [(e.chunk.chunk_id, e.score) for e in single.search(query, k=6, rerank=True)]
        b = [(e.chunk.chunk_id, e.score) for e in shards.search(query, k=6, rerank=True)]
        assert a == b, (query, a, b)
        grew += sum("rerank" in e.retrievers for e in single.search(query, k=6, rerank=True)) > 3
    assert grew, "no query's pool grew past rerank_depth: the test would not see rerank_each"


def test_filters_collapse_and_duplicates_match_the_single_bundle(built) -> None:  # type: ignore[no-untyped-def]
    root, _, sharded, embedder = built
    settings = RetrievalSettings(collapse_documents=True)
    single = Searcher.load(root / "single", embedder, settings)
    shards = ShardedSearcher.load(sharded, embedder, settings)
    only = Filters.of(doc_ids=[f"d{i:04d}" for i in range(0, 160, 3)])
    for query in QUERIES:
        a, b = single.search(query, k=8, filters=only), shards.search(query, k=8, filters=only)
        assert {e.chunk.doc_id for e in b} <= {f"d{i:04d}" for i in range(0, 160, 3)}
        assert [(e.chunk.chunk_id, e.score) for e in a] == [(e.chunk.chunk_id, e.score) for e in b]
        assert len({e.chunk.doc_id for e in b}) == len(b)
    absorbed = {e.chunk.chunk_id: e.also_in for q in QUERIES for e in single.search(q, k=20)}
    assert any(absorbed.values()), "the corpus has copies: some hit must stand for a collapsed document"
    for query in QUERIES:
        for hit in shards.search(query, k=20):
            assert hit.also_in == absorbed.get(hit.chunk.chunk_id, hit.also_in)


def test_documents_go_to_the_shard_their_id_hashes_to(built) -> None:  # type: ignore[no-untyped-def]
    _, _, sharded, _ = built
    index = load_sharded(sharded)
    sizes = []
    for i, folder in enumerate(index.shard_dirs):
        docs = [json.loads(line)["id"] for line in next(folder.glob("documents.g*.jsonl")).read_text().splitlines()]
        assert docs and all(shard_of(d, 4) == i for d in docs)
        sizes.append(len(docs))
    assert sum(sizes) == read_sharded_manifest(sharded)["counts"]["documents"]


def test_corpus_stats_make_shard_bm25_scores_equal_the_whole_corpus() -> None:
    docs = [["aspirin", "dose"], ["aspirin", "aspirin", "bleeding"], ["warfarin", "inr"], ["dose", "inr", "inr"]]
    whole = TermCounts.from_tokens(docs)
    halves = [TermCounts.from_tokens(docs[:2]), TermCounts.from_tokens(docs[2:])]
    stats = CorpusStats.merge([CorpusStats.of(h) for h in halves])
    assert (stats.n_docs, stats.total_length) == (4, 10)
    assert dict(zip(stats.vocab, stats.df.tolist(), strict=True)) == {"aspirin": 2, "dose": 2, "bleeding": 1,
                                                                        "warfarin": 1, "inr": 2}  # fmt: skip
    params = IndexSettings().bm25
    full = BM25Index(whole, params).scores(["aspirin", "inr"])
    parts = np.concatenate([BM25Index(h, params, stats).scores(["aspirin", "inr"]) for h in halves])
    np.testing.assert_allclose(parts, full, rtol=1e-6)
    alone = BM25Index(halves[1], params).scores(["aspirin", "inr"])
    assert not np.allclose(alone, full[2:]), "without the corpus stats a shard scores differently"


def test_merge_rankings_keeps_each_retrievers_best_depth() -> None:
    per_shard = [{"bm25": [("a", "d1", 3.0), ("b", "d2", 1.0)]}, {"bm25": [("c", "d3", 2.0), ("e", "d4", 2.0)]}]
    merged, doc_of, where = merge_rankings(per_shard, 3)
    assert merged["bm25"] == [("a", 3.0), ("c", 2.0), ("e", 2.0)]
    assert doc_of["e"] == "d4" and where == {"a": 0, "b": 0, "c": 1, "e": 1}


def test_verify_and_load_name_a_missing_or_altered_shard(built, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, sharded, embedder = built
    copy = tmp_path / "copy"
    shutil.copytree(sharded, copy)
    assert verify_sharded(copy).ok
    assert verify_sharded(copy).counts["shards"] == 4
    folders = load_sharded(copy).shard_dirs
    with (folders[2] / "manifest.json").open("a") as fh:
        fh.write(" ")
    report = verify_sharded(copy)
    assert not report.ok and any("g1/shard-002" in p for p in report.problems)
    with pytest.raises(BundleError, match="shard-002"):
        ShardedSearcher.load(copy, embedder)
    shutil.rmtree(folders[1])
    with pytest.raises(BundleError, match="shard g1/shard-001 is missing"):
        ShardedSearcher.load(copy, embedder)
    stats = copy / "g1" / "bm25_stats.npz"
    stats.write_bytes(stats.read_bytes()[:-3])
    assert any("bm25_stats" in p for p in verify_sharded(copy).problems)


def test_mixed_embedders_across_shards_are_refused(built, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _root, corpus, sharded, _ = built
    other = tmp_path / "other"
    build_sharded_index([corpus], other, 4, SETTINGS, embedder=HashEmbedder(dim=48, max_tokens=48, name="other"))
    mixed = tmp_path / "mixed"
    shutil.copytree(sharded, mixed)
    shutil.rmtree(mixed / "g1" / "shard-003")
    shutil.copytree(other / "g1" / "shard-003", mixed / "g1" / "shard-003")
    _rewrite_manifest(mixed)  # as if someone re-stamped the checksums: the embedder check must still catch it
    with pytest.raises(BundleMismatchError, match="all shards must share one embedder"):
        load_sharded(mixed)


def _rewrite_manifest(directory: Path) -> None:
    from rag.core.files import file_sha256

    manifest = json.loads((directory / SHARDED_MANIFEST).read_text())
    for entry in manifest["shards"]:
        entry["manifest_sha256"] = file_sha256(directory / entry["path"] / "manifest.json")
    manifest[MANIFEST_CHECKSUM] = manifest_checksum(manifest)
    (directory / SHARDED_MANIFEST).write_bytes(manifest_bytes(manifest))


def test_a_failed_shard_leaves_the_previous_index_whole(built, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _, _corpus, sharded, embedder = built
    copy = tmp_path / "copy"
    shutil.copytree(sharded, copy)
    before = (copy / SHARDED_MANIFEST).read_bytes()
    import indexer.sharded as sharded_module

    real = sharded_module.write_shard

    def dies_on_shard_2(folder, index, *args, **kwargs):  # type: ignore[no-untyped-def]
        if index == 2:
            raise MemoryError("worker killed")
        return real(folder, index, *args, **kwargs)

    monkeypatch.setattr(sharded_module, "write_shard", dies_on_shard_2)
    extra = write_corpus(tmp_path / "extra" / "more.jsonl", 20, seed=5)
    with pytest.raises(MemoryError):
        add_to_sharded(copy, [extra], embedder=embedder)
    assert (copy / SHARDED_MANIFEST).read_bytes() == before
    assert sorted(p.name for p in copy.iterdir() if p.is_dir()) == ["g1"], "the half-written generation is removed"
    assert verify_sharded(copy).ok
    monkeypatch.setattr(sharded_module, "write_shard", real)
    report = add_to_sharded(copy, [extra], embedder=embedder)
    assert report.committed and read_sharded_manifest(copy)["generation"] == 2
    assert verify_sharded(copy).ok


def test_add_and_remove_rebuild_with_the_recorded_settings(built, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _corpus, sharded, embedder = built
    copy = tmp_path / "copy"
    shutil.copytree(sharded, copy)
    extra = write_corpus(tmp_path / "extra" / "more.jsonl", 12, seed=3)
    before = read_sharded_manifest(copy)["counts"]["documents"]
    # the extra corpus reuses ids d0000..: a clash is reported and the first source keeps the id
    report = add_to_sharded(copy, [extra], embedder=embedder)
    assert report.failures and "duplicate document id" in report.failures[0].reason
    removed = remove_from_sharded(copy, doc_ids=["d0001", "d0002"], embedder=embedder)
    assert removed.documents == before - 2
    assert verify_sharded(copy).ok
    searcher = open_searcher(copy, embedder)
    assert isinstance(searcher, ShardedSearcher)
    assert all(e.chunk.doc_id not in {"d0001", "d0002"} for q in QUERIES for e in searcher.search(q, k=20))
    # the next update re-reads the sources: removed documents stay removed
    again = add_to_sharded(copy, [write_corpus(tmp_path / "more" / "z.jsonl", 3, seed=4)], embedder=embedder)
    assert again.documents == before - 2
    assert read_sharded_manifest(copy)["removed_documents"] == ["d0001", "d0002"]
    with pytest.raises(ConfigError, match="source not in the index"):
        remove_from_sharded(copy, source_paths=[tmp_path / "nope.jsonl"], embedder=embedder)


def test_a_recorded_source_that_vanished_stops_add(built, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _root, _, _, embedder = built
    src = write_corpus(tmp_path / "src" / "a.jsonl", 30)
    index = tmp_path / "idx"
    build_sharded_index([src], index, 2, SETTINGS, embedder=embedder)
    src.unlink()
    with pytest.raises(ConfigError, match="indexed before but now missing"):
        add_to_sharded(index, [write_corpus(tmp_path / "b" / "b.jsonl", 5, seed=9)], embedder=embedder)
    assert verify_sharded(index).ok


def test_bad_arguments_are_clear_errors(built, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, corpus, sharded, embedder = built
    with pytest.raises(ConfigError, match="--shards must be between"):
        build_sharded_index([corpus], tmp_path / "x", 0, SETTINGS, embedder=embedder)
    with pytest.raises(ConfigError, match="single \\(unsharded\\) index"):
        build_sharded_index([corpus], root / "single", 2, SETTINGS, embedder=embedder)
    with pytest.raises(ConfigError, match="embedder"):
        build_sharded_index([corpus], sharded, 4, SETTINGS, embedder=HashEmbedder(dim=16))
    with pytest.raises(ConfigError, match="sharded indexes only"):
        open_searcher(root / "single", embedder, ray_address="local")
    with pytest.raises(BundleMismatchError, match="built with embedder"):
        ShardedSearcher.load(sharded, HashEmbedder(dim=16))


def test_on_medquad_four_shards_return_the_single_bundles_top_10(shared_data: Path, tmp_path: Path) -> None:
    """Real documents (MedQuAD, which publishes many answers under several titles) and real dev questions."""
    medquad = shared_data / "retrieval" / "medquad"
    corpus = tmp_path / "src" / "corpus.jsonl"
    corpus.parent.mkdir()
    with (medquad / "corpus.jsonl").open(encoding="utf-8") as src:
        corpus.write_text("".join(line for _, line in zip(range(1500), src, strict=False)), encoding="utf-8")
    embedder = HashEmbedder(dim=64, max_tokens=128)
    single_report = build_index([corpus], tmp_path / "single", SETTINGS, embedder=embedder)
    sharded_report = build_sharded_index([corpus], tmp_path / "sharded", 4, SETTINGS, embedder=embedder)
    assert sharded_report.searchable_chunks == single_report.searchable_chunks
    assert sharded_report.duplicates == single_report.duplicates > 0
    single = Searcher.load(tmp_path / "single", embedder)
    sharded = ShardedSearcher.load(tmp_path / "sharded", embedder)
    with (medquad / "queries.jsonl").open(encoding="utf-8") as fh:
        questions = [json.loads(line)["text"] for _, line in zip(range(200), fh, strict=False)]
    for question in questions:
        for mode in ("hybrid", "bm25", "dense"):
            a = [(e.chunk.chunk_id, e.score, e.also_in) for e in single.search(question, k=10, mode=mode)]  # type: ignore[arg-type]
            b = [(e.chunk.chunk_id, e.score, e.also_in) for e in sharded.search(question, k=10, mode=mode)]  # type: ignore[arg-type]
            assert a == b, (question, mode)  # same order, bit-identical scores (terms summed in text order)


def test_the_worker_message_is_taken_out_of_rays_wrappers() -> None:
    from rag.core.ray_cluster import cause

    class TaskError(Exception):  # a failed task carries the worker's exception
        cause = ValueError("embedding service down")

    died = RuntimeError(  # an actor whose constructor raised carries only a formatted traceback
        "The actor died because of an error raised in its creation task, \x1b[36mray::ShardSearcher.__init__()\x1b[39m"
        ' (pid=1, ip=10.0.0.1)\n  File "rag/index/store.py", line 257, in _load_generation\n    raise BundleError(\n'
        "rag.core.errors.BundleError: idx/g1/shard-001: damaged index: vectors do not match their checksum\n"
    )
    assert cause(TaskError("wrapper")) == "embedding service down"
    assert cause(died) == "idx/g1/shard-001: damaged index: vectors do not match their checksum"
    assert cause(ConnectionError("first line\nsecond")) == "first line"
