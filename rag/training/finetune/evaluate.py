"""Base vs fine-tuned generator on held-out items: closed-form PubMedQA and the quality of generated answers.

Closed-form (label likelihood, one forward pass): PubMedQA accuracy and macro-F1 in the reasoning-required
setting ("gold": the abstract's own sections) and the RAG setting ("rag": question only, evidence retrieved).
Generated answers (greedy): format validity (the engine can parse it), citation validity (every cited key names
a passage of the prompt, and at least one is cited), support rate (cited claims the support checker accepts).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from rag.answering.citations import parse_reply
from rag.answering.closed_form import (
    PUBMEDQA_LABELS,
    PubMedQAItem,
    accuracy,
    gold_evidence,
    macro_f1,
    parse_conclusion,
    parse_decision,
    pubmedqa_prompt,
    score_choices,
)
from rag.answering.prompts import PromptTemplate, RenderedPrompt, render
from rag.checking.support import LexicalSupportChecker
from rag.models.generators.base import Generator, LabelScorer
from rag.retrieval.protocols import EvidenceSearch
from rag.training.finetune.data import Budgets

Setting = Literal["gold", "rag"]
SETTINGS: tuple[Setting, ...] = ("gold", "rag")


class ScoringGenerator(Generator, LabelScorer, Protocol):
    """A generator that also scores labels (the local backend and the scripted one)."""


@dataclass(frozen=True)
class ClosedFormResult:
    setting: str
    items: int
    accuracy: float
    macro_f1: float
    predicted: dict[str, int]  # how often each label was chosen
    loglik: tuple[tuple[float, ...], ...]  # raw label log-likelihoods per item, for fitting biases

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        del data["loglik"]
        return data


@dataclass(frozen=True)
class GenerationResult:
    kind: str  # pubmedqa | answer
    outputs: int
    format_validity: float
    citation_validity: float  # over outputs that do not abstain
    support_rate: float  # over claims with at least one valid citation
    claims: int
    abstained: int
    mean_new_tokens: float


def pubmedqa_item_prompt(
    item: PubMedQAItem,
    setting: Setting,
    template: PromptTemplate,
    count_tokens: Callable[[str], int],
    budgets: Budgets,
    searcher: EvidenceSearch | None = None,
) -> RenderedPrompt:
    """The prompt of one item: its own sections (gold) or what retrieval returns for the question alone (rag)."""
    if setting == "gold":
        return pubmedqa_prompt(
            template,
            item.question,
            gold_evidence(item),
            count_tokens=count_tokens,
            max_prompt_tokens=budgets.gold_prompt_tokens,
            keep_order=True,
        )
    if searcher is None:
        raise ValueError("the rag setting needs a searcher over the evaluation corpus")
    evidence = searcher.search(item.question, k=budgets.rag_k)
    return render(
        template, item.question, evidence, count_tokens=count_tokens, max_prompt_tokens=budgets.rag_prompt_tokens
    )


def closed_form_eval(
    generator: ScoringGenerator,
    items: Sequence[PubMedQAItem],
    setting: Setting,
    template: PromptTemplate,
    budgets: Budgets,
    *,
    searcher: EvidenceSearch | None = None,
    bias: Sequence[float] | None = None,
    progress: bool = False,
) -> ClosedFormResult:
    from tqdm import tqdm

    predicted, rows = [], []
    for item in tqdm(items, desc=f"closed-form {setting}", unit="item", disable=not progress, dynamic_ncols=True):
        prompt = pubmedqa_item_prompt(item, setting, template, generator.count_tokens, budgets, searcher)
        scores = score_choices(generator, prompt.messages, PUBMEDQA_LABELS, bias=bias)
        predicted.append(scores.choice)
        rows.append(scores.loglik)
    gold = [i.decision for i in items]
    return ClosedFormResult(
        setting=setting,
        items=len(items),
        accuracy=accuracy(predicted, gold),
        macro_f1=macro_f1(predicted, gold),
        predicted=dict(Counter(predicted)),
        loglik=tuple(rows),
    )


def rebias(result: ClosedFormResult, gold: Sequence[str], bias: Sequence[float]) -> ClosedFormResult:
    """The same scores with other per-label biases (no model call)."""
    predicted = [PUBMEDQA_LABELS[max(range(len(row)), key=lambda i: row[i] + bias[i])] for row in result.loglik]
    return ClosedFormResult(
        result.setting,
        result.items,
        accuracy(predicted, gold),
        macro_f1(predicted, gold),
        dict(Counter(predicted)),
        result.loglik,
    )


def generation_eval(
    generator: Generator,
    prompts: Sequence[RenderedPrompt],
    kind: str,
    checker: LexicalSupportChecker,
    *,
    max_new_tokens: int = 128,
    progress: bool = False,
) -> GenerationResult:
    from tqdm import tqdm

    parsed_ok = cited_ok = not_abstained = abstained = claims = supported = tokens = 0
    for prompt in tqdm(prompts, desc=f"generate {kind}", unit="answer", disable=not progress, dynamic_ncols=True):
        generation = generator.generate(prompt.messages, max_new_tokens=max_new_tokens)
        tokens += generation.new_tokens
        keys = {e.key: e.text for e in prompt.evidence}
        verdict = _judge(generation.text, kind, keys, checker)
        parsed_ok += verdict.parsed
        abstained += verdict.abstained
        if not verdict.abstained:
            not_abstained += 1
            cited_ok += verdict.citations_valid
        claims += verdict.claims
        supported += verdict.supported
    n = len(prompts)
    return GenerationResult(
        kind=kind,
        outputs=n,
        format_validity=parsed_ok / n if n else 0.0,
        citation_validity=cited_ok / not_abstained if not_abstained else 0.0,
        support_rate=supported / claims if claims else 0.0,
        claims=claims,
        abstained=abstained,
        mean_new_tokens=tokens / n if n else 0.0,
    )


@dataclass(frozen=True)
class _Verdict:
    parsed: bool
    abstained: bool
    citations_valid: bool
    claims: int
    supported: int


def _judge(text: str, kind: str, keys: dict[str, str], checker: LexicalSupportChecker) -> _Verdict:
    if kind == "pubmedqa":
        conclusion = parse_conclusion(text)
        reply = parse_reply(conclusion or "")
        parsed = parse_decision(text) is not None and conclusion is not None and reply.usable
        return _claims_verdict(reply.suggestions, parsed, False, keys, checker)
    reply = parse_reply(text)
    return _claims_verdict(reply.suggestions, reply.usable or reply.abstained, reply.abstained, keys, checker)


def _claims_verdict(
    suggestions: Sequence[Any], parsed: bool, abstained: bool, keys: dict[str, str], checker: LexicalSupportChecker
) -> _Verdict:
    cited = [k for s in suggestions for k in s.citations]
    valid = bool(cited) and all(k in keys for k in cited)
    pairs = [(s, [k for k in s.citations if k in keys]) for s in suggestions]
    pairs = [(s, ks) for s, ks in pairs if ks]
    supported = 0
    for suggestion, cited_keys in pairs:
        scores = checker.score([(suggestion.text, keys[k]) for k in cited_keys])
        supported += int(checker.supported(float(scores.max())))
    return _Verdict(parsed, abstained, valid, len(pairs), supported)
