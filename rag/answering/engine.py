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
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rag.answering.answer import Answer, Flag, OtherSource, Reference, Suggestion
from rag.answering.citations import ParsedReply, ParsedSuggestion, attribute_quotes, parse_reply
from rag.answering.extractive import ExtractiveAnswerer
from rag.answering.patient import Patient, flag_drugs
from rag.answering.prompts import EvidenceItem, PromptTemplate, RenderedPrompt, load_template, render
from rag.answering.quote_completion import complete_quotes
from rag.answering.selection import read_reply
from rag.checking.grounding import not_from_evidence
from rag.checking.verdict import SupportJudge, Verdict
from rag.checking.verifier import load_support_checker
from rag.core.config import GeneratorSettings, Settings, answer_template
from rag.core.errors import ClinragError
from rag.core.types import DocumentMeta, Evidence
from rag.index.store import load_bundle, read_manifest
from rag.models.embed import Embedder
from rag.models.generators.base import GenerationError, Generator
from rag.retrieval.filters import Filters
from rag.retrieval.protocols import PairScorer, Reranker
from rag.retrieval.search import DenseRetriever, Searcher, clean_query
from rag.text.privacy import scrub
from rag.text.units import evidence_units

# A dose, strength or duration: the number must appear in the cited evidence, or the suggestion is flagged.
_DOSE = re.compile(
    r"(?<![\w.])(\d+(?:[.,]\d+)?(?:\s*/\s*\d+(?:[.,]\d+)?)?)\s*(mg|mcg|µg|ug|g|ml|mL|units?|IU|mmol|mEq|%|"
    r"mg/kg|days?|weeks?|hours?|times)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class _Checked:
    suggestion: Suggestion
    dropped: tuple[str, ...]


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
        searcher = Searcher.load(index_dir, embedder, settings.retrieval, reranker)
        query_embedder = searcher.retrievers["dense"].embedder  # type: ignore[attr-defined]
        chosen = generator if isinstance(generator, GeneratorSettings) else settings.generator
        if generator is None or isinstance(generator, GeneratorSettings):
            generator = _make_generator(chosen)
        if checker is None:
            checker = load_support_checker(settings.answer, query_embedder)
        template = load_template(answer_template(settings.answer, chosen), settings.answer.prompts_dir)
        return cls(searcher, generator, settings, checker, template, query_embedder)

    def reload(self) -> bool:
        """Swap in the index's newest committed generation, if there is one; True when it did.

        Safe while other threads are asking: each `ask` reads `self.searcher` once, so a question in flight
        finishes on the generation it started with, and the swap is one attribute assignment, atomic for the
        threads reading it. The old generation stays readable until no question holds it (its files may be
        deleted by the writer already: vectors are memory-mapped, which keeps unlinked files alive).
        """
        current = self.searcher
        directory = current.bundle.path
        if read_manifest(directory).get("generation") == current.bundle.manifest.get("generation"):
            return False
        self.searcher = Searcher(
            load_bundle(directory), self.searcher_embedder, current.settings, current.loaded_reranker
        )
        return True

    @property
    def searcher_embedder(self) -> Embedder:
        """The embedder queries are embedded with (the bundle's own)."""
        dense = self.searcher.retrievers["dense"]
        assert isinstance(dense, DenseRetriever)
        return dense.embedder

    @property
    def generator_name(self) -> str:
        return self.generator.name if self.generator is not None else self.extractive.name

    def ask(self, question: str, patient: Patient | None = None, filters: Filters | None = None) -> Answer:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        # Identifiers in the question (and the patient's marked names) never reach retrieval, prompt or log.
        text = scrub(clean_query(question), patient.names if patient is not None else ()).text
        answer_settings = self.settings.answer
        query = text
        if patient is not None and answer_settings.expand_query_with_patient:
            query = " ".join([text, *patient.query_terms()])
        searcher = self.searcher
        evidence = searcher.search(query, k=answer_settings.evidence_k, filters=filters, rerank=answer_settings.rerank)
        timings["retrieve"] = time.perf_counter() - started

        weak = _weak_retrieval(evidence, answer_settings.min_evidence_score)
        if weak:
            return self._abstain(text, weak, evidence_items(evidence), timings, started)

        if self.generator is not None:
            evidence = _rated_near_best(
                evidence, max(answer_settings.passage_floor, answer_settings.model_passage_floor)
            )
        mark = time.perf_counter()
        prompt = self._render(text, evidence, patient)
        timings["prompt"] = time.perf_counter() - mark

        mark = time.perf_counter()
        scorer = _pair_scorer(searcher) if answer_settings.rerank else None
        reply, fallback, new_tokens = self._generate(text, prompt, scorer)
        parsed = attribute_quotes(self._parse(reply, prompt, fallback), {e.key: e.shown for e in prompt.evidence})
        parsed = complete_quotes(parsed, prompt.evidence)
        unusable = not parsed.usable and not parsed.abstained and self.generator is not None
        if unusable and answer_settings.fallback_to_extractive:
            fallback = "the model's reply had no cited suggestion the engine could parse"
            parsed = parse_reply(self.extractive.answer(text, prompt.evidence, scorer))
        timings["generate"] = time.perf_counter() - mark

        mark = time.perf_counter()
        answer = self._check(text, prompt, parsed, reply, fallback, patient, timings)
        timings["check"] = time.perf_counter() - mark
        if self._all_claims_unsupported(answer, parsed, fallback) and answer_settings.fallback_to_extractive:
            # A small model's paraphrases can drift from what the passages say; the extractive answer quotes them.
            # The model's removed suggestions stay in the answer for audit. Timed apart from the check: it is a
            # second answer (extractive sentences embedded, then checked), not part of checking the first.
            mark = time.perf_counter()
            fallback = "no suggestion in the model's reply was supported by the evidence it cites"
            extractive = parse_reply(self.extractive.answer(text, prompt.evidence, scorer))
            second = self._check(text, prompt, extractive, reply, fallback, patient, timings)
            answer = replace(second, removed_suggestions=answer.removed_suggestions + second.removed_suggestions)
            timings["fallback"] = time.perf_counter() - mark
        answer = replace(answer, prompt_tokens=prompt.prompt_tokens, new_tokens=new_tokens)
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

    def _generate(
        self, question: str, prompt: RenderedPrompt, scorer: PairScorer | None
    ) -> tuple[str, str | None, int]:
        """The reply, why the extractive answer stood in (if it did), and the tokens the model generated."""
        if self.generator is None:
            return self.extractive.answer(question, prompt.evidence, scorer), None, 0
        gen = self.settings.generator
        try:
            generation = self.generator.generate(
                prompt.messages,
                max_new_tokens=self.template.reply_tokens(gen.max_new_tokens),
                temperature=gen.temperature,
            )
        except (GenerationError, RuntimeError) as exc:  # RuntimeError: torch failures inside a local model
            if not self.settings.answer.fallback_to_extractive:
                raise
            return self.extractive.answer(question, prompt.evidence, scorer), f"the generator failed: {exc}", 0
        return generation.text, None, generation.new_tokens

    def _parse(self, reply: str, prompt: RenderedPrompt, fallback: str | None) -> ParsedReply:
        """The model's reply read in its template's format; an extractive stand-in is always in the ordinary one."""
        if self.generator is None or fallback is not None:
            return parse_reply(reply)
        return read_reply(reply, prompt.evidence, self.template)

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
        by_key = {item.key: item for item in prompt.evidence}
        if parsed.abstained:
            return self._answer(
                question,
                (),
                (),
                prompt,
                by_key,
                (),
                reply,
                fallback,
                timings,
                abstained="the generator found the evidence insufficient",
            )
        checked = self._check_suggestions(parsed.suggestions, by_key, patient)
        dropped = tuple(dict.fromkeys([*parsed.unknown_keys, *(k for c in checked for k in c.dropped)]))
        suggestions = [c.suggestion for c in checked]
        # A suggestion its own evidence contradicts is always removed; unsupported ones when configured.
        remove_unsupported = self.settings.answer.remove_unsupported

        def keep(s: Suggestion) -> bool:
            return s.label != "refutes" and (s.supported or not remove_unsupported)

        kept = tuple(s for s in suggestions if keep(s))
        removed = tuple(s for s in suggestions if not keep(s))
        reason = None if kept else "no suggestion is supported by the evidence it cites"
        return self._answer(question, kept, removed, prompt, by_key, dropped, reply, fallback, timings, reason)

    def _all_claims_unsupported(self, answer: Answer, parsed: ParsedReply, fallback: str | None) -> bool:
        return (
            self.generator is not None
            and fallback is None
            and not parsed.abstained
            and bool(parsed.suggestions)
            and not answer.suggestions
        )

    def _check_suggestions(
        self, parsed: Sequence[ParsedSuggestion], by_key: dict[str, EvidenceItem], patient: Patient | None
    ) -> list[_Checked]:
        """Judge every (suggestion, cited passage) pair in one batch, then flag each suggestion."""
        valid = [tuple(k for k in p.citations if k in by_key) for p in parsed]
        pairs = [(p.text, by_key[k].text) for p, keys in zip(parsed, valid, strict=True) for k in keys]
        verdicts = iter(self.checker.judge(pairs) if pairs else [])
        checked = []
        for p, keys in zip(parsed, valid, strict=True):
            by_citation = {k: next(verdicts) for k in keys}
            checked.append(self._check_suggestion(p, keys, by_citation, by_key, patient))
        return checked

    def _check_suggestion(
        self,
        parsed: ParsedSuggestion,
        valid: tuple[str, ...],
        verdicts: dict[str, Verdict],
        by_key: dict[str, EvidenceItem],
        patient: Patient | None,
    ) -> _Checked:
        dropped = tuple(k for k in parsed.citations if k not in by_key)
        flags: list[Flag] = []
        support: float | None = None
        supported = False
        label: str | None = None
        if dropped:
            flags.append(Flag("invented_citation", f"cited {', '.join(dropped)}, which is not in the evidence"))
        if parsed.attributed:
            keys = ", ".join(parsed.citations)
            flags.append(Flag("citation_added", f"copied word for word from {keys}, which the model did not cite"))
        if parsed.completed:
            flags.append(Flag("quote_completed", "the model quoted part of this sentence or list; shown whole"))
        if not valid:
            flags.append(Flag("uncited", "cites no evidence that exists"))
        else:
            support = max(v.support for v in verdicts.values())
            contradicting = [k for k, v in verdicts.items() if v.label == "refutes"]
            label = "refutes" if contradicting else "supports" if any(
                v.label == "supports" for v in verdicts.values()) else "neutral"  # fmt: skip
            threshold = self.settings.answer.support_threshold
            supported = label == "supports" if threshold is None else (support >= threshold and not contradicting)
            cited_text = " ".join(by_key[k].text for k in valid)
            added = not_from_evidence(parsed.text, " ".join(by_key[k].shown for k in valid))
            if contradicting:
                p = max(verdicts[k].refutation for k in contradicting)
                flags.append(Flag("contradicted", f"{', '.join(contradicting)} contradicts this (p {p:.2f})"))
            elif not supported:
                flags.append(Flag("unsupported", f"the cited evidence does not support this (support {support:.2f})"))
            if added:
                supported = False
                words = ", ".join(added[:6])
                flags.append(Flag("not_in_evidence", f"most of its words are not in the cited evidence ({words})"))
            for dose in _doses_missing(parsed.text, cited_text):
                flags.append(Flag("dose_not_in_evidence", f"'{dose}' is not written in the cited evidence"))
        if patient is not None:
            flags += [Flag(f.kind, f.message) for f in flag_drugs(parsed.text, patient)]
        suggestion = Suggestion(parsed.text, valid, support, supported, tuple(flags), label, verdicts)
        return _Checked(suggestion, dropped)

    def _answer(
        self,
        question: str,
        kept: tuple[Suggestion, ...],
        removed: tuple[Suggestion, ...],
        prompt: RenderedPrompt,
        by_key: dict[str, EvidenceItem],
        dropped: tuple[str, ...],
        reply: str,
        fallback: str | None,
        timings: dict[str, float],
        abstained: str | None,
    ) -> Answer:
        cited = {k for s in kept for k in s.citations}
        metas = self.searcher.metas
        references = tuple(
            _reference(item, item.key in cited, [s.text for s in kept if item.key in s.citations], metas)
            for item in sorted(prompt.evidence, key=lambda i: int(i.key[1:]))
        )
        return Answer(
            question=question,
            suggestions=kept,
            references=references,
            abstained=abstained is not None,
            abstention_reason=abstained,
            dropped_citations=dropped,
            removed_suggestions=removed,
            generator=self.generator_name,
            template=prompt.template,
            fallback=fallback,
            timings=timings,
            raw_output=reply,
        )

    def _abstain(
        self,
        question: str,
        reason: str,
        items: Sequence[EvidenceItem],
        timings: dict[str, float],
        started: float,
    ) -> Answer:
        timings["total"] = time.perf_counter() - started
        return Answer(
            question=question,
            suggestions=(),
            references=tuple(_reference(i, False, [], self.searcher.metas) for i in items),
            abstained=True,
            abstention_reason=reason,
            dropped_citations=(),
            removed_suggestions=(),
            generator=self.generator_name,
            template=self.template.label,
            fallback=None,
            timings=timings,
        )

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


def evidence_items(evidence: Sequence[Evidence]) -> list[EvidenceItem]:
    from rag.answering.prompts import evidence_item

    return [evidence_item(f"E{i}", e) for i, e in enumerate(evidence, 1)]


def _rated_near_best(evidence: list[Evidence], floor: float) -> list[Evidence]:
    """The reranked passages rated at least `floor` x the best one's probability (all of them when not reranked).

    A passage the reranker rates far below the best is about something else; a small model shown it may quote it
    (the demo's cystitis answer quoted an H. pylori regimen from the third passage), and the support check cannot
    object: the quote is in the passage it cites. The extractive answer quotes passages above `passage_floor`, a
    second one only when rated within 0.8 of the best; a model cites whatever it is shown, and `model_passage_floor`
    can narrow what it is shown further.
    """
    if not evidence or not all("rerank" in e.retrievers for e in evidence):
        return evidence
    best = max(e.retrievers["rerank"].score for e in evidence)
    return [e for e in evidence if e.retrievers["rerank"].score >= floor * best]


def _pair_scorer(searcher: Searcher) -> PairScorer | None:
    """The searcher's reranker when it can also score sentences (the trained one and the lexical fake can)."""
    reranker = searcher.reranker
    return reranker if isinstance(reranker, PairScorer) else None


def _weak_retrieval(evidence: Sequence[Evidence], min_score: float) -> str | None:
    if not evidence:
        return "no passage in the index matches the question"
    dense = [e.retrievers["dense"].score for e in evidence if "dense" in e.retrievers]
    if dense and max(dense) < min_score:
        return f"the closest passage is only weakly related (similarity {max(dense):.2f} < {min_score:.2f})"
    return None


def _doses_missing(suggestion: str, evidence: str) -> list[str]:
    missing = []
    evidence_numbers = set(re.findall(r"\d+(?:[.,]\d+)?", evidence))
    for match in _DOSE.finditer(suggestion):
        numbers = re.findall(r"\d+(?:[.,]\d+)?", match.group(1))
        if any(n not in evidence_numbers for n in numbers):
            missing.append(match.group(0))
    return missing


def _reference(item: EvidenceItem, cited: bool, citing: list[str], metas: Mapping[str, DocumentMeta]) -> Reference:
    evidence = item.evidence
    assert evidence is not None  # rendered items always carry their evidence
    chunk, meta = evidence.chunk, evidence.meta
    also_in = tuple(
        OtherSource(doc_id, other.title, other.source, other.url)
        for doc_id in evidence.also_in
        if (other := metas.get(doc_id)) is not None
    )
    return Reference(
        key=item.key,
        chunk_id=chunk.chunk_id,
        doc_id=chunk.doc_id,
        title=meta.title,
        issuer=meta.source,
        year=meta.year,
        doc_type=meta.doc_type,
        url=meta.url,
        page_start=chunk.page_start,
        page_end=chunk.page_end,
        section=" > ".join(chunk.section_path),
        quote=_best_quote(chunk.text, citing),
        retrieval_score=evidence.score,
        cited=cited,
        also_in=also_in,
    )


def _best_quote(text: str, claims: list[str], limit: int = 300) -> str:
    sentences = [sentence for _, sentence in evidence_units(text)] or [" ".join(text.split())]
    if claims:
        words = set(_WORD.findall(" ".join(claims).lower()))
        sentences.sort(key=lambda s: -len(words & set(_WORD.findall(s.lower()))))
    quote = sentences[0]
    return quote if len(quote) <= limit else quote[: limit - 1].rsplit(" ", 1)[0] + "…"


def _make_generator(settings: GeneratorSettings) -> Generator | None:
    if settings.kind == "extractive":
        return None
    from rag.models.generators import load_generator

    return load_generator(settings)
