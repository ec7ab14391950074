"""Claim/evidence pairs labelled supports / refutes / neutral, read from the claim-verification sets as published.

HealthVer (CSV), SciFact (claims JSONL + corpus JSONL), K-QA physician NLI labels (CSV) and ExpertQA (JSONL; two
classes only: the experts judged support, not contradiction). Each pair keeps a `group` (the HealthVer topic, the
K-QA question, the SciFact claim, the ExpertQA question) so a validation split never shares a group with training:
`split_of` assigns a group to "validation" by a hash of its name, fixed before any training and independent of
the data order.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rag.checking.verdict import LABELS, Label
from rag.core.errors import ConfigError
from rag.core.files import read_jsonl_objects

Format = Literal["healthver", "scifact", "kqa-nli", "expertqa"]
FORMATS: tuple[Format, ...] = ("healthver", "scifact", "kqa-nli", "expertqa")

_HEALTHVER: dict[str, Label] = {"supports": "supports", "refutes": "refutes", "neutral": "neutral"}
_SCIFACT: dict[str, Label] = {"SUPPORT": "supports", "CONTRADICT": "refutes"}
_NLI: dict[str, Label] = {"entailment": "supports", "contradiction": "refutes", "neutral": "neutral"}
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("the a an of in on and or to for with is are was were be by as at from that this it its".split())


@dataclass(frozen=True)
class ClaimPair:
    claim: str
    evidence: str
    label: Label
    source: Format
    group: str  # pairs of one group are never split between training and validation

    @property
    def label_index(self) -> int:
        return LABELS.index(self.label)


VALIDATION_SHARE = 0.2  # of the groups of each set; `clinrag train verifier` holds these out


def split_of(pair: ClaimPair, validation_share: float = VALIDATION_SHARE) -> Literal["train", "validation"]:
    """A group's split, by the first 8 hex digits of sha256("source:group") against the share."""
    digest = hashlib.sha256(f"{pair.source}:{pair.group}".encode()).hexdigest()
    return "validation" if int(digest[:8], 16) / 0xFFFFFFFF < validation_share else "train"


def select_split(
    pairs: Iterable[ClaimPair],
    split: Literal["all", "train", "validation"],
    validation_share: float = VALIDATION_SHARE,
) -> list[ClaimPair]:
    if split == "all":
        return list(pairs)
    return [p for p in pairs if split_of(p, validation_share) == split]


def read_pairs(fmt: str, path: str | Path, *, corpus: str | Path | None = None) -> list[ClaimPair]:
    """Pairs from one file in its native format; `corpus` is SciFact's abstracts (default: corpus.jsonl beside)."""
    if fmt == "healthver":
        return read_healthver(path)
    if fmt == "scifact":
        return read_scifact(path, corpus)
    if fmt == "kqa-nli":
        return read_kqa_nli(path)
    if fmt == "expertqa":
        return read_expertqa_pairs(path)
    raise ConfigError(f"unknown claim-pair format {fmt!r}; use one of {', '.join(FORMATS)}")


def _read_csv(path: str | Path, needed: Sequence[str], what: str) -> list[dict[str, str]]:
    try:
        with Path(path).open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror or exc}); check the path") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: not a readable {what} CSV ({exc}); use the original file") from exc
    missing = [c for c in needed if rows and c not in rows[0]]
    if not rows or missing:
        raise ConfigError(
            f"{path}: not a {what} CSV (needs columns {', '.join(needed)}; missing {missing or 'all rows'}); "
            "use the original file"
        )
    return rows


def _label(value: str | None, mapping: dict[str, Label], where: str) -> Label:
    label = mapping.get((value or "").strip().lower())
    if label is None:
        raise ConfigError(f"{where}: unknown label {value!r}; expected one of {', '.join(sorted(mapping))}")
    return label


def read_healthver(path: str | Path) -> list[ClaimPair]:
    """HealthVer CSV `id, evidence, claim, label, topic_ip, question`; grouped by topic."""
    rows = _read_csv(path, ("evidence", "claim", "label", "topic_ip"), "HealthVer")
    pairs = []
    for number, row in enumerate(rows, start=2):
        label = _label(row["label"], _HEALTHVER, f"{path}: line {number}")
        pairs.append(ClaimPair(row["claim"], row["evidence"], label, "healthver", f"topic-{row['topic_ip'].strip()}"))
    return pairs


def read_kqa_nli(path: str | Path) -> list[ClaimPair]:
    """K-QA physician NLI: does the LLM `answer` (premise) entail the physician's `claim`? Grouped by question."""
    rows = _read_csv(path, ("Question", "answer", "claim", "majority_label"), "K-QA NLI")
    pairs = []
    for number, row in enumerate(rows, start=2):
        label = _label(row["majority_label"], _NLI, f"{path}: line {number}")
        pairs.append(ClaimPair(row["claim"], row["answer"], label, "kqa-nli", row["Question"].strip()))
    return pairs


def read_expertqa_pairs(path: str | Path) -> list[ClaimPair]:
    """ExpertQA claims with the quoted evidence; "Complete" support is `supports`, anything less `neutral`."""
    from rag.datasets.expertqa import read_expertqa

    readout = read_expertqa(path)
    return [
        ClaimPair(e.claim, e.evidence, "supports" if e.supported() else "neutral", "expertqa", f"q{e.question}")
        for e in readout.examples
    ]


def read_scifact_corpus(path: str | Path) -> dict[str, list[str]]:
    corpus: dict[str, list[str]] = {}
    for row in read_jsonl_objects(Path(path), "SciFact corpus"):
        abstract = row.get("abstract")
        if "doc_id" not in row or not isinstance(abstract, list):
            raise ConfigError(f"{path}: a corpus line lacks doc_id or an abstract list; use SciFact's corpus.jsonl")
        corpus[str(row["doc_id"])] = [str(s).strip() for s in abstract]
    return corpus


def read_scifact(
    path: str | Path, corpus: str | Path | None = None, *, context: bool = False, hard_neutrals: bool = False
) -> list[ClaimPair]:
    """SciFact claims against their abstracts.

    Each rationale (a minimal set of sentences) gives a supports/refutes pair; a claim without evidence ("not
    enough info") is neutral against the sentence pair of each cited abstract that shares most words with it.
    For training, `context` adds each rationale again with its neighbouring sentences (passages at inference are
    longer than a rationale) and `hard_neutrals` pairs evidence-bearing claims with the best-overlapping sentence
    pair of their abstract outside every rationale. Evaluation uses neither, so its pairs are the set's own.
    """
    claims_path = Path(path)
    abstracts = read_scifact_corpus(Path(corpus) if corpus else claims_path.with_name("corpus.jsonl"))
    pairs: list[ClaimPair] = []
    for row in read_jsonl_objects(claims_path, "SciFact claims"):
        try:
            claim, group = str(row["claim"]), f"claim-{row['id']}"
            evidence = row.get("evidence") or {}
            cited = [str(d) for d in row.get("cited_doc_ids") or []]  # type: ignore[attr-defined]
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{claims_path}: a claim lacks {exc}; use SciFact's claims JSONL") from exc
        if not isinstance(evidence, dict):
            raise ConfigError(f"{claims_path}: claim {group}: evidence must be an object; use SciFact's claims JSONL")
        for doc_id, sets in evidence.items():
            sentences = abstracts.get(str(doc_id))
            if sentences is None:
                raise ConfigError(f"{claims_path}: claim {group} cites doc {doc_id}, which the corpus lacks")
            used: set[int] = set()
            for rationale in sets:
                label = _SCIFACT.get(str(rationale.get("label")))
                indices = sorted(int(i) for i in rationale.get("sentences", []) if 0 <= int(i) < len(sentences))
                if label is None or not indices:
                    continue
                used.update(indices)
                pairs.append(ClaimPair(claim, " ".join(sentences[i] for i in indices), label, "scifact", group))
                if context:
                    low, high = max(0, indices[0] - 1), min(len(sentences), indices[-1] + 2)
                    window = " ".join(sentences[low:high])
                    pairs.append(ClaimPair(claim, window, label, "scifact", group))
            if hard_neutrals:
                window = _best_window(claim, sentences, exclude=used)
                if window:
                    pairs.append(ClaimPair(claim, window, "neutral", "scifact", group))
        if not evidence:
            for doc_id in cited:
                window = _best_window(claim, abstracts.get(doc_id, []), exclude=set())
                if window:
                    pairs.append(ClaimPair(claim, window, "neutral", "scifact", group))
    return pairs


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def _best_window(claim: str, sentences: Sequence[str], *, exclude: set[int]) -> str:
    """The two adjacent sentences (neither in `exclude`) sharing most words with the claim; "" if none."""
    words = _words(claim)
    best, best_overlap = "", -1
    for i in range(len(sentences)):
        span = [j for j in (i, i + 1) if j < len(sentences) and j not in exclude]
        if i in exclude or not span:
            continue
        overlap = len(words & _words(" ".join(sentences[j] for j in span)))
        if overlap > best_overlap:
            best, best_overlap = " ".join(sentences[j] for j in span), overlap
    return best
