"""Training and validation examples, rendered with the engine's own templates and real retrieved evidence.

Four kinds of example, each a chat (system + user, exactly as the engine renders it) and the target reply:
- pubmedqa-gold: question + the abstract's own sections -> "ANSWER: <decision>" + its conclusion citing results;
- pubmedqa-rag: question + what the retriever returns (the own abstract added if retrieval missed it);
- medquad: a MedQuAD treatment question + retrieved passages with the gold one among them -> SUGGESTIONS built
  from the gold passage's own sentences, each citing it;
- abstain: a treatment question + passages that do not answer it -> INSUFFICIENT EVIDENCE.

The PubMedQA dev set is split by PMID with a seeded hash, stratified by label: validation items are never
trained on and neither are their abstracts shown as distractors (nor any abstract outside the training split).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rag.answering.closed_form import (
    PubMedQAItem,
    gold_evidence,
    is_results_section,
    label_reply,
    pubmedqa_prompt,
)
from rag.answering.prompts import PromptTemplate, render
from rag.core.errors import ConfigError
from rag.models.generators.base import ChatMessage
from rag.retrieval.filters import Filters
from rag.retrieval.protocols import EvidenceSearch

ABSTAIN_REPLY = "INSUFFICIENT EVIDENCE"
_TREATMENT_WORDS = re.compile(
    r"\b(treat\w*|therap\w*|drug\w*|medic\w*|surg\w*|transplant\w*|chemotherap\w*|radiation|antibiotic\w*|"
    r"dose\w*|manag\w*|prescri\w*|inject\w*|supplement\w*|vaccin\w*|procedure\w*|rehabilitat\w*)\b",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])|\s+-\s+(?=[A-Z])")
_WORD = re.compile(r"[a-z0-9]+")
_RESULTS_LABEL = re.compile(r"RESULT|FINDING", re.IGNORECASE)
_ADDRESSED_TO_READER = re.compile(r"\b(you|your|we)\b", re.IGNORECASE)
_KEYWORDS_TAIL = re.compile(r"\s*(Medical Subject Headings|MeSH|Key ?words?)\b.*$", re.IGNORECASE)


@dataclass(frozen=True)
class Example:
    """One chat and the reply the model should give."""

    kind: str  # pubmedqa-gold | pubmedqa-rag | pubmedqa-conclusion | medquad | abstain
    source_id: str  # PMID or MedQuAD query id
    messages: tuple[ChatMessage, ...]
    reply: str
    label: str = ""  # the PubMedQA decision, for class balancing and calibration


@dataclass(frozen=True)
class Split:
    """PMIDs per part: `train` is fitted on, `calibration` (held out of training) tunes label biases."""

    seed: int
    train: tuple[str, ...]
    calibration: tuple[str, ...]
    validation: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "method": "stratified by final_decision, ordered by sha256('clinrag-split:<seed>:<pmid>')",
            "train": list(self.train),
            "calibration": list(self.calibration),
            "validation": list(self.validation),
        }


@dataclass(frozen=True)
class MedQuADQuery:
    query_id: str
    question: str
    gold_doc: str  # e.g. medquad:02775


@dataclass(frozen=True)
class Budgets:
    """Prompt budgets (model tokens) and passages per prompt: shorter prompts buy more training steps."""

    gold_prompt_tokens: int = 384  # results first: background and methods are cut before them
    rag_prompt_tokens: int = 640
    rag_k: int = 3
    answer_prompt_tokens: int = 768
    answer_k: int = 3


def _rank_key(seed: int, key: str) -> str:
    return hashlib.sha256(f"clinrag-split:{seed}:{key}".encode()).hexdigest()


def split_pubmedqa(items: Sequence[PubMedQAItem], *, seed: int, validation: int = 150, calibration: int = 50) -> Split:
    """A deterministic split stratified by label: the same seed and items give the same PMIDs on any machine."""
    if validation + calibration >= len(items):
        raise ConfigError(
            f"cannot hold out {validation} validation + {calibration} calibration items of {len(items)}; "
            "lower --validation or --calibration"
        )
    by_label: dict[str, list[str]] = {}
    for item in items:
        by_label.setdefault(item.decision, []).append(item.pmid)
    ordered = {label: sorted(pmids, key=lambda p: _rank_key(seed, p)) for label, pmids in sorted(by_label.items())}
    val_quota = _quotas({k: len(v) for k, v in ordered.items()}, validation)
    cal_quota = _quotas({k: len(v) - val_quota[k] for k, v in ordered.items()}, calibration)
    val, cal, train = [], [], []
    for label, pmids in ordered.items():
        val += pmids[: val_quota[label]]
        cal += pmids[val_quota[label] : val_quota[label] + cal_quota[label]]
        train += pmids[val_quota[label] + cal_quota[label] :]
    return Split(seed, tuple(sorted(train)), tuple(sorted(cal)), tuple(sorted(val)))


def _quotas(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Largest-remainder apportionment of `total` over groups of these sizes."""
    whole = sum(sizes.values())
    exact = {k: total * n / whole for k, n in sizes.items()}
    quota = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (quota[k] - exact[k], k))[: total - sum(quota.values())]:
        quota[k] += 1
    return quota


def conclusion_text(long_answer: str, max_words: int = 60) -> str:
    """The abstract's conclusion, cut after the sentence that reaches `max_words`, without a keyword list."""
    text = _KEYWORDS_TAIL.sub("", " ".join(long_answer.split())).strip()
    kept: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        kept.append(sentence)
        if sum(len(s.split()) for s in kept) >= max_words:
            break
    return " ".join(kept)


def pubmedqa_reply(decision: str, conclusion: str, keys: Sequence[str], max_words: int = 60) -> str:
    cites = "".join(f"[{k}]" for k in keys)
    return f"{label_reply(decision)}\nCONCLUSION: {conclusion_text(conclusion, max_words)} {cites}".rstrip()


def pubmedqa_gold_example(
    item: PubMedQAItem, template: PromptTemplate, count_tokens: Callable[[str], int], budgets: Budgets
) -> Example:
    prompt = pubmedqa_prompt(
        template,
        item.question,
        gold_evidence(item),
        count_tokens=count_tokens,
        max_prompt_tokens=budgets.gold_prompt_tokens,
        keep_order=True,
    )
    cited = [e.key for e in prompt.evidence if e.evidence is not None and is_results_section(e.evidence)]
    keys = cited or [prompt.evidence[-1].key]
    return Example(
        "pubmedqa-gold",
        item.pmid,
        prompt.messages,
        pubmedqa_reply(item.decision, item.long_answer, keys),
        item.decision,
    )


def pubmedqa_conclusion_example(
    item: PubMedQAItem, template: PromptTemplate, count_tokens: Callable[[str], int], budgets: Budgets
) -> Example:
    """The results sections plus the abstract's own conclusion: a short, clear lesson in how wording such as
    "did not differ" maps to a decision, which the results sections of other abstracts also use."""
    results = [(c, s) for c, s in zip(item.contexts, item.sections, strict=True) if _RESULTS_LABEL.search(s)]
    sections = replace(
        item,
        contexts=(*(c for c, _ in results), item.long_answer),
        sections=(*(s for _, s in results), "CONCLUSIONS"),
    )
    prompt = pubmedqa_prompt(
        template,
        item.question,
        gold_evidence(sections),
        count_tokens=count_tokens,
        max_prompt_tokens=budgets.gold_prompt_tokens,
        keep_order=True,
    )
    reply = pubmedqa_reply(item.decision, item.long_answer, [prompt.evidence[-1].key])
    return Example("pubmedqa-conclusion", item.pmid, prompt.messages, reply, item.decision)


def pubmedqa_rag_example(
    item: PubMedQAItem,
    template: PromptTemplate,
    searcher: EvidenceSearch,
    allowed_docs: Callable[[str], bool],
    count_tokens: Callable[[str], int],
    budgets: Budgets,
) -> Example:
    """Retrieved evidence as the engine would see it; the own abstract's best chunk is added if retrieval missed."""
    doc = f"pmid:{item.pmid}"
    found = [e for e in searcher.search(item.question, k=budgets.rag_k * 3) if allowed_docs(e.chunk.doc_id)]
    evidence = found[: budgets.rag_k]
    if not any(e.chunk.doc_id == doc for e in evidence):
        own = searcher.search(item.question, k=1, filters=Filters.of(doc_ids=[doc]))
        evidence = own + evidence[: budgets.rag_k - 1]
    prompt = render(
        template, item.question, evidence, count_tokens=count_tokens, max_prompt_tokens=budgets.rag_prompt_tokens
    )
    keys = [e.key for e in prompt.evidence if e.evidence is not None and e.evidence.chunk.doc_id == doc]
    keys = keys or [prompt.evidence[0].key]
    reply = pubmedqa_reply(item.decision, item.long_answer, keys)
    return Example("pubmedqa-rag", item.pmid, prompt.messages, reply, item.decision)


def load_medquad_treatment(beir_dir: str | Path) -> list[MedQuADQuery]:
    """MedQuAD dev queries of question type "treatment" with their judged passage (BEIR queries + qrels)."""
    folder = Path(beir_dir)
    try:
        queries = [json.loads(line) for line in (folder / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
        rows = (folder / "qrels" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{folder}: cannot read MedQuAD queries.jsonl and qrels/dev.tsv ({exc}); point --medquad at the "
            "BEIR folder ../shared/data/retrieval/medquad"
        ) from exc
    gold: dict[str, str] = {}
    for row in rows:
        parts = row.split("\t")
        if len(parts) >= 3 and parts[2].strip() != "0":
            gold.setdefault(parts[0], parts[1])
    return [
        MedQuADQuery(str(q["_id"]), str(q["text"]), gold[q["_id"]])
        for q in queries
        if (q.get("metadata") or {}).get("qtype") == "treatment" and q["_id"] in gold
    ]


def split_medquad(queries: Sequence[MedQuADQuery], *, seed: int, validation: int) -> tuple[list[MedQuADQuery], ...]:
    ordered = sorted(queries, key=lambda q: _rank_key(seed, q.query_id))
    return ordered[validation:], ordered[:validation]


def suggestion_sentences(text: str, question: str, limit: int = 3) -> list[str]:
    """Up to `limit` sentences of a passage that speak about treatment, in passage order, most relevant first."""
    asked = set(_WORD.findall(question.lower()))
    candidates = []
    for position, raw in enumerate(_SENTENCE.split(" ".join(text.split()))):
        sentence = raw.strip(" -")
        words = sentence.split()
        if not 6 <= len(words) <= 45 or not _TREATMENT_WORDS.search(sentence) or sentence.endswith(("?", ":")):
            continue
        if _ADDRESSED_TO_READER.search(sentence):  # "discuss your options with a healthcare provider": no advice
            continue
        overlap = len(asked & set(_WORD.findall(sentence.lower())))
        candidates.append((-(overlap + 2 * len(_TREATMENT_WORDS.findall(sentence))), position, sentence))
    chosen = sorted(sorted(candidates)[:limit], key=lambda c: c[1])
    return [c[2] if c[2].endswith((".", "!")) else f"{c[2]}." for c in chosen]


def suggestions_reply(sentences: Sequence[str], key: str) -> str:
    return "SUGGESTIONS:\n" + "\n".join(f"{i}. {s} [{key}]" for i, s in enumerate(sentences, 1))


def medquad_example(
    query: MedQuADQuery,
    template: PromptTemplate,
    searcher: EvidenceSearch,
    allowed_docs: Callable[[str], bool],
    count_tokens: Callable[[str], int],
    budgets: Budgets,
    rng: random.Random,
) -> Example | None:
    """Retrieved passages with the gold one at a random rank; the reply cites sentences of the gold passage."""
    found = [e for e in searcher.search(query.question, k=budgets.answer_k * 3) if allowed_docs(e.chunk.doc_id)]
    gold = [e for e in found if e.chunk.doc_id == query.gold_doc][:1]
    if not gold:
        gold = searcher.search(query.question, k=1, filters=Filters.of(doc_ids=[query.gold_doc]))
    if not gold:
        return None
    others = [e for e in found if e.chunk.doc_id != query.gold_doc][: budgets.answer_k - 1]
    evidence = list(others)
    evidence.insert(rng.randrange(len(others) + 1), gold[0])
    prompt = render(
        template, query.question, evidence, count_tokens=count_tokens, max_prompt_tokens=budgets.answer_prompt_tokens
    )
    shown = [e for e in prompt.evidence if e.evidence is not None and e.evidence.chunk.doc_id == query.gold_doc]
    if not shown:
        return None
    sentences = suggestion_sentences(shown[0].text, query.question)
    if not sentences:
        return None
    return Example("medquad", query.query_id, prompt.messages, suggestions_reply(sentences, shown[0].key))


def abstain_example(
    query: MedQuADQuery,
    template: PromptTemplate,
    searcher: EvidenceSearch,
    allowed_docs: Callable[[str], bool],
    count_tokens: Callable[[str], int],
    budgets: Budgets,
) -> Example | None:
    """The question with passages of the same topic that say nothing about treatment (symptoms, causes, ...)."""
    found = searcher.search(query.question, k=30)
    unhelpful = [
        e
        for e in found
        if allowed_docs(e.chunk.doc_id)
        and e.chunk.doc_id != query.gold_doc
        and e.meta.extra.get("qtype", "") not in ("treatment", "")
        and not _TREATMENT_WORDS.search(e.chunk.text)
    ][: budgets.answer_k]
    if len(unhelpful) < 2:
        return None
    prompt = render(
        template, query.question, unhelpful, count_tokens=count_tokens, max_prompt_tokens=budgets.answer_prompt_tokens
    )
    return Example("abstain", query.query_id, prompt.messages, ABSTAIN_REPLY)


def training_docs(train_pmids: Iterable[str]) -> Callable[[str], bool]:
    """Documents a training prompt may show: any non-PubMedQA passage and the training split's own abstracts."""
    allowed = {f"pmid:{p}" for p in train_pmids}
    return lambda doc_id: not doc_id.startswith("pmid:") or doc_id in allowed
