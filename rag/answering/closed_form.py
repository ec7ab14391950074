"""Closed-form answers (yes/no/maybe, A-E) scored by label likelihood: one forward pass, no sampling.

Shared by the fine-tuning run and the evaluation harness, so both read PubMedQA, build its prompt and pick an
answer the same way:

    items = load_pubmedqa("../shared/data/pubmedqa/pqal_dev.json")
    prompt = pubmedqa_prompt(load_template("pubmedqa"), items[0].question, gold_evidence(items[0]), ...)
    scores = score_choices(generator, prompt.messages, PUBMEDQA_LABELS, bias=card_biases)
    scores.choice  # "yes" | "no" | "maybe"

A small model's label log-likelihoods carry a strong prior towards some labels whatever the evidence says;
`fit_biases` learns one additive offset per label on training items (never on the split that is reported).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from rag.answering.prompts import PromptTemplate, RenderedPrompt, lost_in_the_middle_order, render
from rag.core.errors import ConfigError
from rag.core.types import Chunk, DocumentMeta, Evidence, parse_year
from rag.models.generators.base import ChatMessage, LabelScorer

PUBMEDQA_LABELS: tuple[str, ...] = ("yes", "no", "maybe")
MCQ_LABELS: tuple[str, ...] = ("A", "B", "C", "D", "E")
ANSWER_PREFIX = "ANSWER: "
Objective = Literal["accuracy", "macro_f1", "nll"]

_DECISION = re.compile(r"ANSWER\s*:\s*(yes|no|maybe)\b", re.IGNORECASE)
_CONCLUSION = re.compile(r"CONCLUSION\s*:\s*(?P<text>.+)", re.IGNORECASE | re.DOTALL)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_RESULTS = re.compile(r"RESULT|FINDING", re.IGNORECASE)
_EVIDENCE_OVERHEAD = 24  # tag, key and attributes of one evidence block, as `rag.answering.prompts` counts them


@dataclass(frozen=True)
class PubMedQAItem:
    """One expert-labelled PubMedQA item in its native fields."""

    pmid: str
    question: str
    contexts: tuple[str, ...]
    sections: tuple[str, ...]  # the label of each context (BACKGROUND, METHODS, RESULTS, ...)
    year: str
    decision: str  # yes | no | maybe ("" for an unlabelled item)
    long_answer: str  # the abstract's conclusion


@dataclass(frozen=True)
class ChoiceScores:
    labels: tuple[str, ...]
    loglik: tuple[float, ...]  # summed log-probability of each label as the start of the reply
    adjusted: tuple[float, ...]  # loglik plus the per-label bias
    choice: str  # argmax of `adjusted` (the first label on a tie)

    @property
    def index(self) -> int:
        return self.labels.index(self.choice)


def load_pubmedqa(path: str | Path) -> list[PubMedQAItem]:
    """Items of a native PubMedQA file (`{pmid: {QUESTION, CONTEXTS, LABELS, YEAR, final_decision, ...}}`)."""
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the PubMedQA file ({exc.strerror}); check the path") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file}: not valid JSON ({exc}); expected the native PubMedQA format") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected an object keyed by PMID (native PubMedQA format)")
    items = []
    for pmid, row in data.items():
        try:
            contexts = tuple(str(c) for c in row["CONTEXTS"])
            sections = tuple(str(s) for s in row.get("LABELS") or ())
            items.append(
                PubMedQAItem(
                    pmid=str(pmid),
                    question=str(row["QUESTION"]),
                    contexts=contexts,
                    sections=sections if len(sections) == len(contexts) else ("",) * len(contexts),
                    year=str(row.get("YEAR") or ""),
                    decision=str(row.get("final_decision") or "").lower(),
                    long_answer=str(row.get("LONG_ANSWER") or ""),
                )
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                f"{file}: item {pmid}: needs QUESTION and CONTEXTS ({type(exc).__name__}: {exc}); "
                "is this a native PubMedQA file?"
            ) from exc
    return items


def gold_evidence(item: PubMedQAItem) -> list[Evidence]:
    """The item's own contexts as evidence passages, one per section, titled by the section label."""
    evidence = []
    for i, (text, section) in enumerate(zip(item.contexts, item.sections, strict=True)):
        title = section.strip().capitalize() or f"Context {i + 1}"
        chunk = Chunk(
            chunk_id=f"pmid:{item.pmid}#{i}",
            doc_id=f"pmid:{item.pmid}",
            text=text,
            breadcrumb=title,
            section_path=(title,),
            char_start=0,
            char_end=len(text),
            page_start=None,
            page_end=None,
            n_tokens=0,
            content_hash=hashlib.sha256(text.encode()).hexdigest()[:32],
        )
        meta = DocumentMeta(title=title, doc_type="literature", source="PubMed", year=parse_year(item.year))
        evidence.append(Evidence(chunk=chunk, meta=meta, score=1.0))
    return evidence


def is_results_section(evidence: Evidence) -> bool:
    return bool(_RESULTS.search(evidence.meta.title))


def pubmedqa_prompt(
    template: PromptTemplate,
    question: str,
    evidence: Sequence[Evidence],
    *,
    count_tokens: Callable[[str], int],
    max_prompt_tokens: int,
    keep_order: bool = False,
) -> RenderedPrompt:
    """The engine's rendering of `template`. keep_order: show the passages in the given order (an abstract's
    sections), cutting background before results when the budget is short; otherwise retrieval order."""
    if not keep_order:
        return render(template, question, evidence, count_tokens=count_tokens, max_prompt_tokens=max_prompt_tokens)
    empty = render(template, question, [], count_tokens=count_tokens, max_prompt_tokens=max_prompt_tokens)
    budget = max_prompt_tokens - empty.prompt_tokens - 16  # what `render` leaves for evidence
    kept = fit_in_order(evidence, budget, count_tokens)
    # `render` shows its input in lost-in-the-middle order; feeding it the inverse permutation shows ours.
    order = lost_in_the_middle_order(len(kept))
    ranking: list[Evidence] = list(kept)
    for shown, rank in enumerate(order):
        ranking[rank] = kept[shown]
    return render(template, question, ranking, count_tokens=count_tokens, max_prompt_tokens=max_prompt_tokens)


def fit_in_order(evidence: Sequence[Evidence], budget: int, count_tokens: Callable[[str], int]) -> list[Evidence]:
    """Passages cut to `budget` tokens: results sections keep their room first, the others are cut at sentences."""
    items = list(evidence)
    priority = sorted(range(len(items)), key=lambda i: (not is_results_section(items[i]), i))
    texts: dict[int, str] = {}
    for i in priority:
        item = items[i]
        overhead = count_tokens(item.meta.title) + _EVIDENCE_OVERHEAD
        cost = count_tokens(item.chunk.text) + overhead
        if cost <= budget:
            texts[i] = item.chunk.text
            budget -= cost
            continue
        part = _sentence_prefix(item, budget, count_tokens)
        if part:
            texts[i] = part
            budget -= count_tokens(part) + overhead
    return [_with_text(items[i], texts[i]) for i in range(len(items)) if i in texts]


def _sentence_prefix(item: Evidence, budget: int, count_tokens: Callable[[str], int]) -> str:
    overhead = count_tokens(item.meta.title) + _EVIDENCE_OVERHEAD
    part = ""
    for sentence in _SENTENCE.split(item.chunk.text):
        candidate = f"{part} {sentence}".strip()
        if count_tokens(candidate) + overhead > budget:
            break
        part = candidate
    return part


def _with_text(evidence: Evidence, text: str) -> Evidence:
    if text == evidence.chunk.text:
        return evidence
    chunk = evidence.chunk
    cut = Chunk(
        chunk.chunk_id,
        chunk.doc_id,
        text,
        chunk.breadcrumb,
        chunk.section_path,
        chunk.char_start,
        chunk.char_start + len(text),
        chunk.page_start,
        chunk.page_end,
        chunk.n_tokens,
        chunk.content_hash,
    )
    return replace(evidence, chunk=cut)


def mcq_question(question: str, options: Mapping[str, str]) -> str:
    """A multiple-choice question with its options on lines "A. ...", as the `mcq` template expects."""
    lines = [question.strip(), *(f"{key}. {str(text).strip()}" for key, text in sorted(options.items()))]
    return "\n".join(lines)


def mcq_prompt(
    template: PromptTemplate,
    question: str,
    options: Mapping[str, str],
    evidence: Sequence[Evidence] = (),
    *,
    count_tokens: Callable[[str], int],
    max_prompt_tokens: int,
) -> RenderedPrompt:
    """A MIRAGE-style multiple-choice prompt (the `mcq` template), with retrieved evidence or none."""
    return render(
        template,
        mcq_question(question, options),
        evidence,
        count_tokens=count_tokens,
        max_prompt_tokens=max_prompt_tokens,
    )


def label_reply(label: str) -> str:
    """How a label starts the assistant's reply in the pubmedqa and mcq templates."""
    return f"{ANSWER_PREFIX}{label}"


def score_choices(
    scorer: LabelScorer,
    messages: Sequence[ChatMessage],
    labels: Sequence[str],
    *,
    bias: Sequence[float] | Mapping[str, float] | None = None,
) -> ChoiceScores:
    """Log-likelihood of each "ANSWER: <label>" reply, plus the per-label bias, and the best label."""
    loglik = tuple(scorer.score_labels(messages, [label_reply(label) for label in labels]))
    offsets = _bias_vector(bias, labels)
    adjusted = tuple(float(s + b) for s, b in zip(loglik, offsets, strict=True))
    return ChoiceScores(tuple(labels), loglik, adjusted, labels[int(np.argmax(adjusted))])


def _bias_vector(bias: Sequence[float] | Mapping[str, float] | None, labels: Sequence[str]) -> list[float]:
    if bias is None:
        return [0.0] * len(labels)
    if isinstance(bias, Mapping):
        return [float(bias.get(label, 0.0)) for label in labels]
    if len(bias) != len(labels):
        raise ValueError(f"got {len(bias)} biases for {len(labels)} labels; give one bias per label")
    return [float(b) for b in bias]


def parse_decision(text: str) -> str | None:
    """yes / no / maybe from a generated "ANSWER: ..." line, or None when the reply has none."""
    match = _DECISION.search(text)
    return match.group(1).lower() if match else None


def parse_conclusion(text: str) -> str | None:
    match = _CONCLUSION.search(text)
    return match.group("text").strip() if match else None


def fit_biases(
    loglik: Sequence[Sequence[float]],
    gold: Sequence[int],
    *,
    objective: Objective = "accuracy",
    limit: float = 6.0,
    step: float = 0.1,
) -> list[float]:
    """Per-label offsets added to the label log-likelihoods that best predict `gold` on these (training) items.

    The first label's offset is fixed at 0 (only differences matter). accuracy / macro_f1: exhaustive grid
    within +-`limit`, ties going to the smallest offsets; nll: the maximum-likelihood offsets (a convex fit).
    """
    scores = np.asarray(loglik, dtype=np.float64)
    truth = np.asarray(gold, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != truth.shape[0] or scores.shape[0] == 0:
        raise ValueError(f"fit_biases needs one row of scores per gold label; got {scores.shape} and {truth.shape}")
    if objective == "nll":
        return _fit_nll(scores, truth)
    grid = np.round(np.arange(-limit, limit + step / 2, step), 6)
    best: tuple[float, float, list[float]] = (-1.0, 0.0, [0.0] * scores.shape[1])
    metric = accuracy_of if objective == "accuracy" else macro_f1_of
    for offsets in _grid(grid, scores.shape[1] - 1):
        bias = np.concatenate([[0.0], offsets])
        value = metric((scores + bias).argmax(axis=1), truth, scores.shape[1])
        key = (value, -float(np.abs(bias).sum()))
        if key > best[:2]:
            best = (key[0], key[1], [float(b) for b in bias])
    return best[2]


def _grid(values: np.ndarray, dims: int) -> list[np.ndarray]:
    if dims == 0:
        return [np.zeros(0)]
    if dims > 2:
        raise ValueError(f"grid search fits at most 3 labels, got {dims + 1}; use objective='nll' for more")
    mesh = np.stack(np.meshgrid(*([values] * dims), indexing="ij"), axis=-1).reshape(-1, dims)
    return list(mesh)


def _fit_nll(scores: np.ndarray, truth: np.ndarray, iterations: int = 500, rate: float = 0.5) -> list[float]:
    bias = np.zeros(scores.shape[1])
    onehot = np.eye(scores.shape[1])[truth]
    for _ in range(iterations):
        logits = scores + bias
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        bias -= rate * (probs - onehot).mean(axis=0)
    return [float(b) for b in bias - bias[0]]


def accuracy_of(predicted: np.ndarray, truth: np.ndarray, classes: int = 0) -> float:
    return float((predicted == truth).mean()) if truth.size else 0.0


def macro_f1_of(predicted: np.ndarray, truth: np.ndarray, classes: int) -> float:
    """Macro-averaged F1 over `classes` labels (a label never predicted nor present scores 0, as sklearn does)."""
    f1s = []
    for c in range(classes):
        tp = float(((predicted == c) & (truth == c)).sum())
        fp = float(((predicted == c) & (truth != c)).sum())
        fn = float(((predicted != c) & (truth == c)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(f1s)) if f1s else 0.0


def accuracy(predicted: Sequence[str], gold: Sequence[str]) -> float:
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold) if gold else 0.0


def macro_f1(predicted: Sequence[str], gold: Sequence[str], labels: Sequence[str] = PUBMEDQA_LABELS) -> float:
    index = {label: i for i, label in enumerate(labels)}
    pred = np.asarray([index.get(p, -1) for p in predicted])
    truth = np.asarray([index[g] for g in gold])
    return macro_f1_of(pred, truth, len(labels))
