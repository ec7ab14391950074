"""Loads what an `Engine` is made of: its searcher, query embedder, generator, support checker and prompt template."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rag.answering.prompts import PromptTemplate, load_template
from rag.checking.verdict import SupportJudge
from rag.checking.verifier import load_support_checker
from rag.core.config import GeneratorSettings, Settings, answer_template
from rag.models.embed import Embedder
from rag.models.generators.base import Generator
from rag.retrieval.protocols import Reranker
from rag.retrieval.search import Searcher


@dataclass(frozen=True)
class EngineParts:
    """An engine's loaded parts; `generator` None means the extractive answerer generates."""

    searcher: Searcher
    generator: Generator | None
    checker: SupportJudge
    template: PromptTemplate
    embedder: Embedder


def load_engine_parts(
    index_dir: str | Path,
    generator: Generator | GeneratorSettings | None,
    settings: Settings,
    *,
    embedder: Embedder | None,
    checker: SupportJudge | None,
    reranker: Reranker | None,
) -> EngineParts:
    """The parts given, and the ones `settings` name loaded (see `Engine.load`)."""
    # The engine's reranked order is the answer's (answer.rerank_prior_scale), not a ranked list's.
    retrieval = settings.retrieval.model_copy(update={"rerank_prior_scale": settings.answer.rerank_prior_scale})
    searcher = Searcher.load(index_dir, embedder, retrieval, reranker)
    query_embedder = searcher.query_embedder
    chosen = generator if isinstance(generator, GeneratorSettings) else settings.generator
    if generator is None or isinstance(generator, GeneratorSettings):
        generator = make_generator(chosen)
    if checker is None:
        checker = load_support_checker(settings.answer, query_embedder)
    template = load_template(answer_template(settings.answer, chosen), settings.answer.prompts_dir)
    return EngineParts(searcher, generator, checker, template, query_embedder)


def make_generator(settings: GeneratorSettings) -> Generator | None:
    """The generator `settings` name; None for the extractive one (the engine answers extractively then)."""
    if settings.kind == "extractive":
        return None
    from rag.models.generators import load_generator

    return load_generator(settings)
