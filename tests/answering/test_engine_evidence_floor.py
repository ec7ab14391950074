"""The evidence a model generator is shown: reranked passages rated near the best one, not those far below it."""

from __future__ import annotations

from pathlib import Path

from indexer import build_index
from rag.answering.engine import Engine
from rag.answering.evidence_policy import rated_near_best
from rag.checking.support import LexicalSupportChecker
from rag.core.config import IndexSettings, Settings, with_overrides
from rag.core.types import Chunk, DocumentMeta, Evidence, RetrieverHit
from rag.retrieval.search import Searcher
from rag.testing import HashEmbedder, LexicalReranker, ScriptedGenerator


def passages(rerank: list[float | None]) -> list[Evidence]:
    meta = DocumentMeta(title="T", doc_type="guideline", source="test")
    out = []
    for i, score in enumerate(rerank):
        chunk = Chunk(f"c{i}", f"d{i}", "text", "", (), 0, 4, None, None, 1, f"h{i}")
        hits = {"fused": RetrieverHit(i + 1, 0.5)} | (
            {"rerank": RetrieverHit(i + 1, score)} if score is not None else {}
        )
        out.append(Evidence(chunk, meta, score if score is not None else 0.5, hits))
    return out


def test_passages_rated_far_below_the_best_are_not_shown() -> None:
    kept = rated_near_best(passages([0.9, 0.5, 0.2]), 0.5)
    assert [e.chunk.chunk_id for e in kept] == ["c0", "c1"]  # 0.2 < 0.5 x 0.9
    assert len(rated_near_best(passages([0.9, 0.5, 0.2]), 0.0)) == 3


def test_unreranked_or_empty_evidence_is_left_as_it_is() -> None:
    assert len(rated_near_best(passages([None, None]), 0.5)) == 2
    assert len(rated_near_best(passages([0.9, None]), 0.5)) == 2
    assert rated_near_best([], 0.5) == []


def test_a_model_is_shown_only_passages_rated_within_model_passage_floor(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    texts = {
        "a": "Nitrofurantoin for five days treats uncomplicated cystitis in women.",
        "b": "Fosfomycin treats cystitis as a single dose.",
        "c": "Cystitis causes burning on urination.",
    }
    for name, text in texts.items():
        (src / f"{name}.md").write_text(f"---\ntitle: {name}\ntype: guideline\n---\n{text}\n", encoding="utf-8")
    embedder = HashEmbedder(dim=32, max_tokens=96)
    build_index(
        [src], tmp_path / "index", IndexSettings.model_validate({"cache_dir": str(tmp_path / "c")}), embedder=embedder
    )
    question = "Which drug treats uncomplicated cystitis in women for five days?"
    reranker = LexicalReranker()
    searcher = Searcher.load(tmp_path / "index", embedder)
    scores = sorted((e.score for e in reranker.rerank(question, searcher.search(question, k=3))), reverse=True)
    assert scores[1] < 0.8 * scores[0] and scores[2] >= 0.1 * scores[0]  # the floors below tell them apart

    def shown(**floors: float) -> int:
        over = {"answer.min_evidence_score": -1.0, "answer.evidence_k": 3} | {
            f"answer.{k}": v for k, v in floors.items()
        }
        engine = Engine.load(
            tmp_path / "index",
            ScriptedGenerator(lambda m: "INSUFFICIENT EVIDENCE"),
            with_overrides(Settings(), over),
            embedder=embedder,
            checker=LexicalSupportChecker(),
            reranker=reranker,
        )
        return len(engine.ask(question).references)

    assert shown(passage_floor=0.1, model_passage_floor=0.0) == 3
    assert shown(passage_floor=0.1, model_passage_floor=0.8) == 1
    assert shown(passage_floor=0.9, model_passage_floor=0.0) == 1  # the stricter of the two floors holds
