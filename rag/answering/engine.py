"""The answer engine: question (+ patient) -> reranked evidence -> prompt -> generator -> checked, cited suggestions.

    engine = Engine.load("indexes/demo")
    answer = engine.ask("first-line treatment of uncomplicated cystitis", patient=load_patient("p.json"))
    print(answer.to_markdown())

Every citation is checked against the evidence it names: keys that name no passage are dropped and reported,
each suggestion is judged against each cited passage by the trained support checker (supports / refutes /
neutral), contradicted suggestions are always removed, unsupported ones flagged (and removed by default), and
the engine abstains when retrieval is weak or nothing supported remains. A model reply that cannot be parsed,
or none of whose suggestions is supported, falls back to the extractive answer built from the evidence.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from rag.answering.answer import Answer, Suggestion
from rag.answering.answer_assembly import abstention, checked_answer
from rag.answering.citations import ParsedReply, attribute_quotes
from rag.answering.contraindications import contraindicated_last
from rag.answering.engine_parts import load_engine_parts
from rag.answering.evidence_policy import (
    RERANKED,
    demote_boilerplate,
    evidence_items,
    rated_near_best,
    reranker_unsure,
    weak_retrieval,
)
from rag.answering.extractive import ExtractiveAnswerer
from rag.answering.patient import Patient
from rag.answering.prompts import EvidenceItem, PromptTemplate, RenderedPrompt, render
from rag.answering.quote_completion import complete_quotes
from rag.answering.replies import (
    NOTHING_TO_DO_REPLY,
    UNPARSABLE_REPLY,
    UNSUPPORTED_REPLY,
    all_claims_unsupported,
    extractive_reply,
    generate_reply,
    pair_scorer,
    read_generated_reply,
    says_nothing_to_do,
)
from rag.answering.suggestion_check import check_suggestions, kept_and_removed
from rag.checking.verdict import SupportJudge
from rag.core.config import GeneratorSettings, Settings
from rag.core.errors import ClinragError
from rag.core.types import Evidence
from rag.models.embed import Embedder
from rag.models.generators.base import Generator
from rag.retrieval.filters import Filters
from rag.retrieval.protocols import PairScorer, Reranker
from rag.retrieval.search import Searcher, clean_query
from rag.text.privacy import scrub

MAX_QUESTION_WORDS = 300
# Passages fetched beyond evidence_k, so that boilerplate sections rated down leave room for ones that answer.
EXTRA_PASSAGES = 3


class Engine:
    """A loaded index, generator, prompt template and support checker. Build it with `Engine.load`."""

    def __init__(
        self,
        searcher: Searcher,
        generator: Generator | None,
        settings: Settings,
        checker: SupportJudge,
        template: PromptTemplate,
        embedder: Embedder | None = None,
    ) -> None:
        self.searcher = searcher
        self.generator = generator  # None: the extractive answerer is the generator
        self.settings = settings
        self.checker = checker
        self.template = template
        self.extractive = ExtractiveAnswerer(embedder, passage_floor=settings.answer.passage_floor)

    @classmethod
    def load(
        cls,
        index_dir: str | Path,
        generator: Generator | GeneratorSettings | None = None,
        settings: Settings | None = None,
        *,
        embedder: Embedder | None = None,
        checker: SupportJudge | None = None,
        reranker: Reranker | None = None,
    ) -> Engine:
        """`reranker` is used when settings.answer.rerank is on; None loads settings.retrieval.reranker then."""
        settings = settings or Settings()
        parts = load_engine_parts(index_dir, generator, settings, embedder=embedder, checker=checker, reranker=reranker)
        return cls(parts.searcher, parts.generator, settings, parts.checker, parts.template, parts.embedder)

    def reload(self) -> bool:
        """Swap in the index's newest committed generation, if there is one; True when it did.

        Safe while other threads are asking: each `ask` reads `self.searcher` once, so a question in flight
        finishes on the generation it started with, and the swap is one attribute assignment, atomic for the
        threads reading it. The old generation stays readable until no question holds it (its files may be
        deleted by the writer already: vectors are memory-mapped, which keeps unlinked files alive).
        """
        current = self.searcher
        newest = current.reloaded()
        if newest is current:
            return False
        self.searcher = newest
        return True

    @property
    def searcher_embedder(self) -> Embedder:
        """The embedder queries are embedded with (the bundle's own)."""
        return self.searcher.query_embedder

    @property
    def generator_name(self) -> str:
        return self.generator.name if self.generator is not None else self.extractive.name

    def ask(self, question: str, patient: Patient | None = None, filters: Filters | None = None) -> Answer:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        # Identifiers in the question (and the patient's marked names) never reach retrieval, prompt or log.
        text = scrub(clean_query(question), patient.names if patient is not None else ()).text
        answer_settings = self.settings.answer
        words = len(text.split())
        if words > MAX_QUESTION_WORDS:
            # A pasted note or document, not a question: its words would crowd the evidence out of the prompt.
            reason = (f"the question is {words} words long; ask it in at most {MAX_QUESTION_WORDS} words and put "
                      "the patient's facts in a patient record (--patient FILE)")  # fmt: skip
            return self._abstain(text, reason, [], timings, started)
        query = text
        if patient is not None and answer_settings.expand_query_with_patient:
            query = " ".join([text, *patient.query_terms()])
        searcher = self.searcher
        evidence, ranking = self._retrieve(searcher, text, query, filters)
        timings["retrieve"] = time.perf_counter() - started

        weak = weak_retrieval(evidence, answer_settings.min_evidence_score)
        if weak:
            return replace(self._abstain(text, weak, evidence_items(evidence), timings, started), ranking=ranking)

        if self.generator is not None:
            evidence = rated_near_best(
                evidence, max(answer_settings.passage_floor, answer_settings.model_passage_floor)
            )
        mark = time.perf_counter()
        prompt = self._render(text, evidence, patient)
        timings["prompt"] = time.perf_counter() - mark

        mark = time.perf_counter()
        scorer = pair_scorer(searcher) if ranking == RERANKED else None
        parsed, reply, fallback, new_tokens = self._reply(text, prompt, scorer)
        timings["generate"] = time.perf_counter() - mark

        mark = time.perf_counter()
        answer = self._check(text, prompt, parsed, reply, fallback, patient, timings)
        timings["check"] = time.perf_counter() - mark
        generated = self.generator is not None
        unsupported = all_claims_unsupported(answer, parsed, fallback, generated=generated)
        idle = not unsupported and fallback is None and says_nothing_to_do(text, answer, generated=generated)
        if (unsupported or idle) and answer_settings.fallback_to_extractive:
            # A small model's paraphrases can drift from what the passages say; the extractive answer quotes them.
            # The model's removed suggestions stay in the answer for audit. Timed apart from the check: it is a
            # second answer (extractive sentences embedded, then checked), not part of checking the first.
            mark = time.perf_counter()
            fallback = UNSUPPORTED_REPLY if unsupported else NOTHING_TO_DO_REPLY
            extractive = extractive_reply(self.extractive, text, prompt, scorer)
            second = self._check(text, prompt, extractive, reply, fallback, patient, timings)
            # The model's suggestions stay for audit: those the check removed, and those that said nothing to do.
            audit = answer.removed_suggestions + (answer.suggestions if idle else ())
            answer = replace(second, removed_suggestions=audit + second.removed_suggestions)
            timings["fallback"] = time.perf_counter() - mark
        answer = replace(answer, prompt_tokens=prompt.prompt_tokens, new_tokens=new_tokens, ranking=ranking)
        timings["total"] = time.perf_counter() - started
        self._log(answer, patient)
        return answer

    def ask_many(
        self,
        questions: Sequence[str],
        patients: Sequence[Patient | None] | None = None,
        filters: Filters | None = None,
    ) -> list[Answer]:
        """Answers in order; a question that fails gets an abstaining answer naming the error, not an exception."""
        if patients is not None and len(patients) != len(questions):
            raise ValueError(f"{len(questions)} questions but {len(patients)} patients; pass one patient per question")
        answers = []
        for i, question in enumerate(questions):
            try:
                answers.append(self.ask(question, patients[i] if patients else None, filters))
            except (ClinragError, ValueError) as exc:
                answers.append(self._abstain(str(question)[:200], f"error: {exc}", (), {}, time.perf_counter()))
        return answers

    # ------------------------------------------------------------------------------------------------ steps

    def _retrieve(
        self, searcher: Searcher, question: str, query: str, filters: Filters | None
    ) -> tuple[list[Evidence], str]:
        """The passages an answer rests on, and the order that chose them (`RERANKED` or why it is the fused one).

        A few more than `evidence_k` are fetched so that boilerplate sections, rated down, make room for passages
        that say what to do. Where the reranker is unsure of every passage, the fused order chooses the extractive
        answer's passages instead. A model generator is shown the reranked ones whatever the reranker's confidence:
        the packaged 135M, shown the fused passages, fell back more often and lost the demo's COPD answer.
        """
        answer_settings = self.settings.answer
        k = answer_settings.evidence_k + EXTRA_PASSAGES
        found = searcher.search(query, k=k, filters=filters, rerank=answer_settings.rerank)
        evidence = demote_boilerplate(question, found)
        if not answer_settings.rerank:
            return evidence[: answer_settings.evidence_k], "fused: reranking is off"
        gate = answer_settings.rerank_min_confidence if self.generator is None else 0.0
        unsure = reranker_unsure(evidence, gate)
        if unsure is None:
            return evidence[: answer_settings.evidence_k], RERANKED
        fused = demote_boilerplate(question, searcher.search(query, k=k, filters=filters, rerank=False))
        return fused[: answer_settings.evidence_k], f"fused: {unsure}"

    def _render(self, question: str, evidence: Sequence[Evidence], patient: Patient | None) -> RenderedPrompt:
        answer_settings = self.settings.answer
        budget = answer_settings.max_prompt_tokens
        count = self._count_tokens
        if self.generator is not None:
            budget = min(budget, self.generator.context_window - self.settings.generator.max_new_tokens)
        return render(
            self.template,
            question,
            evidence,
            count_tokens=count,
            max_prompt_tokens=budget,
            patient_lines=patient.prompt_lines() if patient is not None else (),
            examples=self.template.examples[: answer_settings.shots],
        )

    def _count_tokens(self, text: str) -> int:
        if self.generator is not None:
            return self.generator.count_tokens(text)
        return max(1, len(text) // 4)

    def _reply(
        self, question: str, prompt: RenderedPrompt, scorer: PairScorer | None
    ) -> tuple[ParsedReply, str, str | None, int]:
        """(the reply read, the reply, why the extractive answer stood in if it did, tokens the model generated).

        The extractive answer stands in when there is no generator, when it fails, and when its reply has no
        cited suggestion that can be read (these two only with settings.answer.fallback_to_extractive).
        """
        generated = self.generator is not None
        reply, fallback, new_tokens = generate_reply(
            question,
            prompt,
            scorer,
            generator=self.generator,
            extractive=self.extractive,
            template=self.template,
            settings=self.settings,
        )
        read = read_generated_reply(reply, prompt, fallback, generated=generated, template=self.template)
        parsed = attribute_quotes(read, {e.key: e.shown for e in prompt.evidence})
        parsed = complete_quotes(parsed, prompt.evidence)
        unusable = not parsed.usable and not parsed.abstained and generated
        if unusable and self.settings.answer.fallback_to_extractive:
            fallback = UNPARSABLE_REPLY
            parsed = extractive_reply(self.extractive, question, prompt, scorer)
        return parsed, reply, fallback, new_tokens

    def _check(
        self,
        question: str,
        prompt: RenderedPrompt,
        parsed: ParsedReply,
        reply: str,
        fallback: str | None,
        patient: Patient | None,
        timings: dict[str, float],
    ) -> Answer:
        """The answer `parsed` makes once each suggestion is checked against the evidence it cites."""

        def answer(
            kept: tuple[Suggestion, ...],
            removed: tuple[Suggestion, ...],
            dropped: tuple[str, ...],
            abstained: str | None,
        ) -> Answer:
            return checked_answer(
                question, kept, removed, prompt, dropped, reply, fallback, timings, abstained,
                metas=self.searcher.metas, generator=self.generator_name,
            )  # fmt: skip

        if parsed.abstained:
            return answer((), (), (), "the generator found the evidence insufficient")
        by_key = {item.key: item for item in prompt.evidence}
        answer_settings = self.settings.answer
        checked = check_suggestions(
            parsed.suggestions, by_key, patient, self.checker, answer_settings.support_threshold
        )
        dropped = tuple(dict.fromkeys([*parsed.unknown_keys, *(k for c in checked for k in c.dropped)]))
        kept, removed = kept_and_removed([c.suggestion for c in checked], answer_settings.remove_unsupported)
        kept = contraindicated_last(kept, prompt.evidence, question, patient)
        reason = None if kept else "no suggestion is supported by the evidence it cites"
        return answer(kept, removed, dropped, reason)

    def _abstain(
        self,
        question: str,
        reason: str,
        items: Sequence[EvidenceItem],
        timings: dict[str, float],
        started: float,
    ) -> Answer:
        timings["total"] = time.perf_counter() - started
        return abstention(
            question, reason, items, timings,
            metas=self.searcher.metas, generator=self.generator_name, template=self.template.label,
        )  # fmt: skip

    def _log(self, answer: Answer, patient: Patient | None) -> None:
        path = self.settings.answer.log_file
        if not path:
            return
        names = tuple(patient.names) if patient is not None else ()
        record = answer.to_dict()
        record["raw_output"] = scrub(answer.raw_output, names).text
        record["patient"] = patient.prompt_lines() if patient is not None else None
        with Path(path).expanduser().open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
