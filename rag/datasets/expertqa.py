"""ExpertQA read as published: each claim of each answer with its quoted evidence and the expert's support label.

Used to fit and measure the support checkers; claims cited only by URL, uncited or judged "N/A" are counted, not kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rag.core.errors import ConfigError

_EVIDENCE_HEAD = re.compile(r"^\s*(?:\[\d+\])?\s*(?:https?://\S+)?\s*")
UNJUDGED_LABELS = frozenset({"N/A", ""})


@dataclass(frozen=True)
class SupportExample:
    question: int  # line number in the file: folds are grouped by it so no question leaks across them
    system: str
    claim: str
    evidence: str
    label: str  # the expert's support label as written: Complete, Partial, Incomplete, Missing

    def supported(self, positive_labels: Sequence[str] = ("Complete",)) -> bool:
        return self.label in positive_labels


@dataclass(frozen=True)
class ExpertQAReadout:
    examples: tuple[SupportExample, ...]
    claims: int  # every claim in the file
    url_only: int  # cited, but only by URL: no text to judge
    uncited: int
    unjudged: int  # passage present but labelled N/A


def evidence_text(evidence: Sequence[str]) -> str:
    """The quoted passages of a claim's evidence list, URL heads removed; empty when only URLs are given."""
    passages = [_EVIDENCE_HEAD.sub("", item, count=1).strip() for item in evidence]
    return "\n".join(p for p in passages if p)


def read_expertqa(path: str | Path) -> ExpertQAReadout:
    """(claim, evidence passage, expert label) from a native ExpertQA jsonl, where the passage text exists."""
    examples: list[SupportExample] = []
    claims = url_only = uncited = unjudged = 0
    try:
        lines = Path(path).read_text("utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        for number, row in enumerate(rows, start=1):
            for system, answer in row["answers"].items():
                for claim in answer.get("claims") or []:
                    claims += 1
                    text, label = evidence_text(claim.get("evidence") or []), str(claim.get("support") or "")
                    if not claim.get("evidence"):
                        uncited += 1
                    elif not text:
                        url_only += 1
                    elif label in UNJUDGED_LABELS:
                        unjudged += 1
                    else:
                        examples.append(SupportExample(number, system, claim["claim_string"], text, label))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ExpertQA file ({exc}); check the path") from exc
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"{path}: not native ExpertQA jsonl ({type(exc).__name__}: {exc}); use the original file"
        ) from exc
    return ExpertQAReadout(tuple(examples), claims, url_only, uncited, unjudged)
