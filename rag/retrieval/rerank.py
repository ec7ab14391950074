"""Rerankers: re-order retrieved passages by how well each answers the question, read together with it.

    reranker = load_reranker("default")            # the packaged MiniLM cross-encoder (rag/data/rerankers/)
    evidence = reranker.rerank(question, evidence)  # best first; each Evidence gains a "rerank" hit

The same model scores (question, heading: sentence) pairs for the extractive answerer (`PairScorer`), so the
sentence an answer quotes is chosen by what it says, not only by the words it shares with the question.
`LexicalReranker` is the deterministic, model-free stand-in for tests.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path

from rag.core.config import RerankDtype
from rag.core.cpu import native_bf16
from rag.core.types import Evidence, RetrieverHit
from rag.models.crossencoder import CrossEncoder, rank_feature, strip_control
from rag.retrieval.protocols import PairScorer

PACKAGED_RERANKER = "minilm-medquad-v2"
RELEVANCE_LABELS = ("relevant", "not_relevant")
# A 50 kB passage is cut before tokenizing: the model reads at most max_length tokens of it anyway.
_MAX_TEXT_CHARS = 8_000
_WORD = re.compile(r"[a-z0-9]+")


class CrossEncoderReranker:
    """A trained cross-encoder (labels relevant / not_relevant).

    A pair's score is P(relevant). A reranked passage's score adds the model's learnt fused-rank prior to the
    log-odds first (`rank_prior * -ln(1 + fused rank)`, rag.training.listwise), so a reranker trained with it
    keeps the fused order where it cannot tell the passages apart.
    """

    def __init__(
        self,
        model: CrossEncoder,
        name: str = "cross-encoder",
        batch_size: int = 32,
        *,
        bf16: bool = False,
        prior_scale: float = 1.0,
    ) -> None:
        if tuple(model.config.labels) != RELEVANCE_LABELS:
            raise ValueError(f"a reranker needs labels {RELEVANCE_LABELS}, this model has {model.config.labels}")
        self.model = model
        self.name = name
        self.batch_size = batch_size
        self.bf16 = bf16
        # retrieval.rerank_prior_scale: how far the order leans on the fused rank, in units of the learnt prior.
        self.prior_scale = prior_scale

    @classmethod
    def load(
        cls, folder: str | Path, *, dtype: RerankDtype = "float32", prior_scale: float = 1.0
    ) -> CrossEncoderReranker:
        from rag.core.errors import ConfigError

        path = Path(folder)
        model = CrossEncoder.load(path)
        bf16 = dtype == "bfloat16" or (dtype == "auto" and native_bf16())
        try:
            return cls(model, name=f"cross-encoder:{path.name}", bf16=bf16, prior_scale=prior_scale)
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}; give a folder written by `clinrag train reranker`") from exc

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return [_sigmoid(m) for m in self.margins(pairs)]

    def rerank(self, query: str, evidence: list[Evidence]) -> list[Evidence]:
        if not evidence:
            return []
        margins = self.margins([(query, passage_text(e)) for e in evidence])
        return ordered_by(evidence, with_rank_prior(margins, self.model.config.rank_prior * self.prior_scale))

    def margins(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """The model's log-odds that each passage answers its question (no prior)."""
        cleaned = [(clean_text(a), clean_text(b)) for a, b in pairs]
        return [float(m) for m in self.model.margins(cleaned, batch_size=self.batch_size, bf16=self.bf16)]


def with_rank_prior(margins: Sequence[float], weight: float) -> list[float]:
    """Probabilities of passages given in fused order: each margin plus `weight` x its fused-rank feature."""
    return [_sigmoid(m + weight * rank_feature(i)) for i, m in enumerate(margins)]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def word_overlap(question: str, text: str) -> float:
    """The share of the question's distinct words that `text` contains."""
    words = set(_WORD.findall(question.lower()))
    return len(words & set(_WORD.findall(text.lower()))) / (len(words) or 1)


def passage_text(evidence: Evidence) -> str:
    """What a reranker reads of a passage: its heading path, then its text (as it was indexed)."""
    return evidence.chunk.indexed_text


def rerank_with(scorer: PairScorer, query: str, evidence: list[Evidence]) -> list[Evidence]:
    """Evidence sorted by the scorer (ties keep retrieval order); each gains a "rerank" hit and that score."""
    if not evidence:
        return []
    return ordered_by(evidence, scorer.score([(query, passage_text(e)) for e in evidence]))


def ordered_by(evidence: list[Evidence], scores: Sequence[float]) -> list[Evidence]:
    """Evidence sorted by score (ties keep the given order); each gains a "rerank" hit and that score."""
    order = sorted(range(len(evidence)), key=lambda i: -scores[i])
    out = []
    for rank, i in enumerate(order, 1):
        e = evidence[i]
        hits = {**e.retrievers, "rerank": RetrieverHit(rank, scores[i])}
        out.append(replace(e, score=scores[i], retrievers=hits))
    return out


def clean_text(text: str) -> str:
    """Printable text of bounded length: control characters become spaces, very long text is cut."""
    return strip_control(str(text)[:_MAX_TEXT_CHARS])


def packaged_reranker_path() -> Path:
    return Path(str(resources.files("rag") / "data" / "rerankers" / PACKAGED_RERANKER))


def load_reranker(value: str, *, dtype: RerankDtype = "float32", prior_scale: float = 1.0) -> CrossEncoderReranker:
    """The packaged reranker for "default"; otherwise a folder written by `clinrag train reranker`. `dtype`:
    "auto" computes in bfloat16 where the CPU does so natively (retrieval.rerank_dtype)."""
    if value == "default" and not packaged_reranker_path().is_dir():
        from rag.core.errors import ConfigError

        raise ConfigError(
            f"{packaged_reranker_path()}: the packaged reranker is missing from this installation; reinstall "
            "clinrag, or train one with `clinrag train reranker --out DIR` and pass it as --reranker DIR "
            "(retrieval.reranker)"
        )
    folder = packaged_reranker_path() if value == "default" else Path(value).expanduser()
    return CrossEncoderReranker.load(folder, dtype=dtype, prior_scale=prior_scale)
