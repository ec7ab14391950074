"""Where the reply to check comes from: the generator, or the extractive answer standing in for it (the fallback)."""

from __future__ import annotations

import re

from rag.answering.answer import Answer
from rag.answering.citations import ParsedReply, parse_reply
from rag.answering.extractive import ExtractiveAnswerer, defers_the_choice
from rag.answering.prompts import PromptTemplate, RenderedPrompt
from rag.answering.selection import read_reply
from rag.core.config import Settings
from rag.models.generators.base import GenerationError, Generator
from rag.retrieval.protocols import PairScorer
from rag.retrieval.search import Searcher

# Why the extractive answer replaced a model's reply after it was read (Answer.fallback).
UNPARSABLE_REPLY = "the model's reply had no cited suggestion the engine could parse"
UNSUPPORTED_REPLY = "no suggestion in the model's reply was supported by the evidence it cites"
NOTHING_TO_DO_REPLY = "the question asks what to do and every suggestion of the model defers the choice"
# A question about what to do: treatment, drugs, doses, regimens.
_ASKS_WHAT_TO_DO = re.compile(
    r"\b(treat\w*|therap\w*|manag\w*|drugs?|medications?|medicines?|doses?|dosage|first[- ]line|prescri\w*|"
    r"antibiotics?|regimens?|anticoagula\w*|which .* (?:should|to) (?:be )?(?:used|given|start\w*))\b",
    re.IGNORECASE,
)


def pair_scorer(searcher: Searcher) -> PairScorer | None:
    """The searcher's reranker when it can also score sentences (the trained one and the lexical fake can)."""
    reranker = searcher.reranker
    return reranker if isinstance(reranker, PairScorer) else None


def generate_reply(
    question: str,
    prompt: RenderedPrompt,
    scorer: PairScorer | None,
    *,
    generator: Generator | None,
    extractive: ExtractiveAnswerer,
    template: PromptTemplate,
    settings: Settings,
) -> tuple[str, str | None, int]:
    """The reply, why the extractive answer stood in (if it did), and the tokens the model generated.

    Without a generator the extractive answer is the reply; a failing generator is replaced by it when
    settings.answer.fallback_to_extractive is on, and its error is raised otherwise.
    """
    if generator is None:
        return extractive.answer(question, prompt.evidence, scorer), None, 0
    gen = settings.generator
    try:
        generation = generator.generate(
            prompt.messages,
            max_new_tokens=template.reply_tokens(gen.max_new_tokens),
            temperature=gen.temperature,
        )
    except (GenerationError, RuntimeError) as exc:  # RuntimeError: torch failures inside a local model
        if not settings.answer.fallback_to_extractive:
            raise
        return extractive.answer(question, prompt.evidence, scorer), f"the generator failed: {exc}", 0
    return generation.text, None, generation.new_tokens


def read_generated_reply(
    reply: str, prompt: RenderedPrompt, fallback: str | None, *, generated: bool, template: PromptTemplate
) -> ParsedReply:
    """The model's reply read in its template's format; an extractive stand-in is always in the ordinary one.

    `generated`: the engine has a generator (without one, every reply is the extractive answer's).
    """
    if not generated or fallback is not None:
        return parse_reply(reply)
    return read_reply(reply, prompt.evidence, template)


def extractive_reply(
    extractive: ExtractiveAnswerer, question: str, prompt: RenderedPrompt, scorer: PairScorer | None
) -> ParsedReply:
    """The extractive answer over the prompt's passages, read as a reply."""
    return parse_reply(extractive.answer(question, prompt.evidence, scorer))


def says_nothing_to_do(question: str, answer: Answer, *, generated: bool) -> bool:
    """A model answered a what-to-do question only with sentences that defer the choice (no dose, "depends on").

    The small default model quoted only "The choice depends on local resistance, allergy history ..." for the
    demo's cystitis question: true, cited and supported, and no answer; the extractive answer quotes the regimen.
    """
    if not generated or not answer.suggestions or not _ASKS_WHAT_TO_DO.search(question):
        return False
    return all(defers_the_choice(s.text) for s in answer.suggestions)


def all_claims_unsupported(answer: Answer, parsed: ParsedReply, fallback: str | None, *, generated: bool) -> bool:
    """True when a model (not a stand-in) made suggestions and the check removed every one of them."""
    return (
        generated and fallback is None and not parsed.abstained and bool(parsed.suggestions) and not answer.suggestions
    )
