"""Native readers for the evaluation sets: PubMedQA JSON, MIRAGE benchmark JSON, K-QA JSONL, read as published.

A malformed row does not stop the run: it becomes a `RowFailure` naming the file, the row and what is wrong,
and the other rows are evaluated. A file that cannot be read at all, or an unknown format, is a `ConfigError`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rag.answering.closed_form import PUBMEDQA_LABELS, PubMedQAItem, mcq_question
from rag.core.errors import ConfigError
from rag.core.files import file_sha256

Format = Literal["pubmedqa", "mirage", "kqa"]
FORMATS: tuple[Format, ...] = ("pubmedqa", "mirage", "kqa")
_NON_WORD = re.compile(r"[^0-9a-z]+")


@dataclass(frozen=True)
class QAItem:
    """One evaluation question in the harness's terms, whatever its native format."""

    item_id: str
    format: Format
    subset: str  # pubmedqa | the MIRAGE subset (mmlu, medmcqa, ...) | kqa
    question: str
    answer: str  # the gold label (yes/no/maybe, A-E) or, for K-QA, the physician's free-form answer
    labels: tuple[str, ...] = ()  # closed-form label set; empty for open-ended questions
    options: tuple[tuple[str, str], ...] = ()  # MCQ options (letter, text)
    gold_docs: tuple[str, ...] = ()  # corpus document ids that answer the question (PubMedQA: pmid:<PMID>)
    must_have: tuple[str, ...] = ()
    nice_to_have: tuple[str, ...] = ()
    pubmedqa: PubMedQAItem | None = field(default=None, compare=False, repr=False)

    @property
    def closed_form(self) -> bool:
        return bool(self.labels)

    @property
    def has_gold_context(self) -> bool:
        return self.pubmedqa is not None

    @property
    def prompt_question(self) -> str:
        """The question as the template shows it (MCQ: with its options on lines "A. ...")."""
        return mcq_question(self.question, dict(self.options)) if self.options else self.question

    @property
    def query(self) -> str:
        """What retrieval is asked: the question, and for MCQ its options too (they carry the content words)."""
        return " ".join([self.question, *(text for _, text in self.options)])


@dataclass(frozen=True)
class RowFailure:
    path: str
    row: str  # the row's id or line number
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "row": self.row, "reason": self.reason}


@dataclass(frozen=True)
class Readout:
    path: str
    format: Format
    sha256: str
    items: tuple[QAItem, ...]
    failures: tuple[RowFailure, ...]

    def subsets(self) -> list[str]:
        return sorted({i.subset for i in self.items})


def normalise_question(text: str) -> str:
    """Case, punctuation and spacing folded: the key by which a pool example is recognised as the item itself."""
    return " ".join(_NON_WORD.sub(" ", text.casefold()).split())


def read_dataset(path: str | Path, fmt: str, subset: str | None = None) -> Readout:
    """Every well-formed row of a native file, and a failure for each malformed one."""
    file = Path(path)
    if fmt not in FORMATS:
        raise ConfigError(f"{file}: unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not file.is_file():
        raise ConfigError(f"{file}: no such dataset file; check --dataset (the shared sets live in ../shared/data)")
    readers = {"pubmedqa": _read_pubmedqa, "mirage": _read_mirage, "kqa": _read_kqa}
    items, failures = readers[fmt](file)
    items, failures = _unique(items, failures, file)
    if subset is not None:
        known = sorted({i.subset for i in items})
        items = [i for i in items if i.subset == subset]
        if not items:
            raise ConfigError(f"{file}: no items in subset {subset!r}; subsets here: {', '.join(known) or 'none'}")
    if not items:
        problems = "; ".join(f"{f.row}: {f.reason}" for f in failures[:3])
        raise ConfigError(f"{file}: no usable {fmt} rows ({problems or 'the file is empty'}); is this a {fmt} file?")
    return Readout(str(file), fmt, file_sha256(file), tuple(items), tuple(failures))


def _unique(items: list[QAItem], failures: list[RowFailure], file: Path) -> tuple[list[QAItem], list[RowFailure]]:
    seen: set[str] = set()
    kept = []
    for item in items:
        if item.item_id in seen:
            failures.append(RowFailure(str(file), item.item_id, "duplicate id; the first row with it is kept"))
            continue
        seen.add(item.item_id)
        kept.append(item)
    return kept, failures


def _load_json(file: Path, what: str) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the {what} file ({exc.strerror}); check the path") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{file}: not valid JSON ({exc}); expected the native {what} format") from exc


# ---------------------------------------------------------------------------------------------------- PubMedQA


def _read_pubmedqa(file: Path) -> tuple[list[QAItem], list[RowFailure]]:
    data = _load_json(file, "PubMedQA")
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected an object keyed by PMID (native PubMedQA format)")
    items, failures = [], []
    for pmid, row in data.items():
        try:
            items.append(pubmedqa_item(str(pmid), row))
        except (KeyError, TypeError, ValueError) as exc:
            failures.append(RowFailure(str(file), str(pmid), _reason(exc, "needs QUESTION, CONTEXTS, final_decision")))
    return items, failures


def pubmedqa_item(pmid: str, row: Any) -> QAItem:
    """One native PubMedQA row; raises KeyError/TypeError/ValueError naming what is wrong."""
    if not isinstance(row, dict):
        raise TypeError(f"the row is a {type(row).__name__}, not an object")
    question = _text(row["QUESTION"], "QUESTION")
    contexts = row["CONTEXTS"]
    if not isinstance(contexts, list) or not contexts:
        raise TypeError("CONTEXTS must be a non-empty list of passages")
    sections = [str(s) for s in row.get("LABELS") or ()]
    decision = str(row.get("final_decision") or "").strip().lower()
    if decision not in PUBMEDQA_LABELS:
        raise ValueError(f"final_decision {decision!r} is not one of {', '.join(PUBMEDQA_LABELS)}")
    native = PubMedQAItem(
        pmid=pmid,
        question=question,
        contexts=tuple(str(c) for c in contexts),
        sections=tuple(sections) if len(sections) == len(contexts) else ("",) * len(contexts),
        year=str(row.get("YEAR") or ""),
        decision=decision,
        long_answer=str(row.get("LONG_ANSWER") or ""),
    )
    return QAItem(
        item_id=pmid,
        format="pubmedqa",
        subset="pubmedqa",
        question=question,
        answer=decision,
        labels=PUBMEDQA_LABELS,
        gold_docs=(f"pmid:{pmid}",),
        pubmedqa=native,
    )


# ---------------------------------------------------------------------------------------------------- MIRAGE


def _read_mirage(file: Path) -> tuple[list[QAItem], list[RowFailure]]:
    data = _load_json(file, "MIRAGE")
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(
            f"{file}: expected {{dataset: {{id: {{question, options, answer}}}}}} (MIRAGE benchmark.json)"
        )
    items, failures = [], []
    for subset, rows in data.items():
        for row_id, row in rows.items():
            try:
                items.append(mirage_item(str(subset), str(row_id), row))
            except (KeyError, TypeError, ValueError) as exc:
                failures.append(RowFailure(str(file), f"{subset}/{row_id}", _reason(exc, "needs question, options")))
    return items, failures


def mirage_item(subset: str, row_id: str, row: Any) -> QAItem:
    if not isinstance(row, dict):
        raise TypeError(f"the row is a {type(row).__name__}, not an object")
    options = row["options"]
    if not isinstance(options, dict) or len(options) < 2:
        raise TypeError("options must be an object with at least two lettered options")
    letters = tuple(sorted(str(k).strip().upper() for k in options))
    answer = str(row["answer"]).strip().upper()
    if answer not in letters:
        raise ValueError(f"answer {answer!r} is not one of the options {', '.join(letters)}")
    return QAItem(
        item_id=f"{subset}/{row_id}",
        format="mirage",
        subset=subset,
        question=_text(row["question"], "question"),
        answer=answer,
        labels=letters,
        options=tuple(sorted((str(k).strip().upper(), str(v)) for k, v in options.items())),
    )


# ---------------------------------------------------------------------------------------------------- K-QA


def _read_kqa(file: Path) -> tuple[list[QAItem], list[RowFailure]]:
    items, failures = [], []
    for number, line in _lines(file):
        try:
            items.append(kqa_item(json.loads(line)))
        except json.JSONDecodeError as exc:
            failures.append(RowFailure(str(file), f"line {number}", f"not valid JSON ({exc.msg})"))
        except (KeyError, TypeError, ValueError) as exc:
            failures.append(RowFailure(str(file), f"line {number}", _reason(exc, "needs Question and Must_have")))
    return items, failures


def _lines(file: Path) -> Iterator[tuple[int, str]]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read the K-QA file ({exc}); expected UTF-8 JSON lines") from exc
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield number, line


def kqa_item(row: Any) -> QAItem:
    if not isinstance(row, dict):
        raise TypeError(f"the row is a {type(row).__name__}, not an object")
    question = _text(row["Question"], "Question")
    must = _statements(row["Must_have"], "Must_have")
    if not must:
        raise ValueError("Must_have is empty: an unanswered question cannot be scored")
    return QAItem(
        item_id="kqa-" + hashlib.sha256(question.encode()).hexdigest()[:12],  # K-QA rows carry no id
        format="kqa",
        subset="kqa",
        question=question,
        answer=str(row.get("Free_form_answer") or ""),
        must_have=must,
        nice_to_have=_statements(row.get("Nice_to_have") or [], "Nice_to_have"),
    )


def _statements(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError(f"{name} must be a list of statements")
    return tuple(s for s in (" ".join(str(v).split()) for v in value) if s)


def _text(value: Any, name: str) -> str:
    text = " ".join(str(value).split()) if isinstance(value, str) else ""
    if not text:
        raise ValueError(f"{name} is empty or not text")
    return text


def _reason(exc: Exception, expected: str) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r} ({expected})"
    return str(exc)


def select_items(
    items: Sequence[QAItem], *, ids: Sequence[str] | None = None, limit: int | None = None
) -> list[QAItem]:
    """The items to evaluate: those named (in file order), then the first `limit`."""
    chosen = list(items)
    if ids is not None:
        wanted = set(ids)
        missing = wanted - {i.item_id for i in items}
        if missing:
            raise ConfigError(
                f"{len(missing)} requested item ids are not in the dataset (e.g. {sorted(missing)[0]!r}); "
                "check the id list against the file"
            )
        chosen = [i for i in chosen if i.item_id in wanted]
    return chosen[:limit] if limit is not None else chosen


def dataset_facts(readout: Readout, items: Sequence[QAItem]) -> Mapping[str, Any]:
    return {
        "path": readout.path,
        "format": readout.format,
        "sha256": readout.sha256,
        "rows_read": len(readout.items),
        "items_evaluated": len(items),
        "subsets": sorted({i.subset for i in items}),
        "malformed_rows": [f.to_json() for f in readout.failures],
    }
