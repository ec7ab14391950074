"""What a support checker says about one (claim, evidence) pair, and the protocol every checker follows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from rag.claims import LABELS, Label

Floats = npt.NDArray[np.float64]
Pair = tuple[str, str]  # (claim, evidence passage)


@dataclass(frozen=True)
class Verdict:
    """supports / refutes / neutral, the probability of each (in LABELS order) and the window judged."""

    label: Label
    probabilities: tuple[float, float, float]
    window: str = ""  # the part of the evidence the verdict rests on (the most decisive window)
    basis: str = "model"  # "model"; "quote": the claim is written word for word in the evidence; "empty"

    @property
    def support(self) -> float:
        return self.probabilities[0]

    @property
    def refutation(self) -> float:
        return self.probabilities[1]

    def to_dict(self) -> dict[str, object]:
        return {
            "label": self.label,
            "probabilities": {name: round(p, 4) for name, p in zip(LABELS, self.probabilities, strict=True)},
            "basis": self.basis,
        }


NEUTRAL = Verdict("neutral", (0.0, 0.0, 1.0), basis="empty")


@runtime_checkable
class SupportJudge(Protocol):
    """A support checker: the trained cross-encoder (`rag.verifier.NLIVerifier`) or the calibrated fallback."""

    @property
    def name(self) -> str: ...

    def judge(self, pairs: Sequence[Pair]) -> list[Verdict]:
        """One verdict per (claim, evidence) pair."""
        ...

    def score(self, pairs: Sequence[Pair]) -> Floats:
        """Probability that each evidence passage supports its claim."""
        ...

    def supported(self, score: float) -> bool: ...


class ScriptedJudge:
    """A deterministic fake for tests: the first cue (a lower-case phrase) found in the claim gives the label,
    with probability 0.9; a claim with no cue gets `default`. No model, no I/O."""

    def __init__(self, cues: Mapping[str, Label], default: Label = "neutral") -> None:
        self.cues = dict(cues)
        self.default = default
        self.calls: list[list[Pair]] = []  # every batch judged, for tests that count model calls

    @property
    def name(self) -> str:
        return "scripted-judge"

    def judge(self, pairs: Sequence[Pair]) -> list[Verdict]:
        self.calls.append(list(pairs))
        return [self._verdict(claim) for claim, _ in pairs]

    def score(self, pairs: Sequence[Pair]) -> Floats:
        return np.array([v.support for v in self.judge(pairs)], dtype=np.float64)

    def supported(self, score: float) -> bool:
        return bool(score >= 0.5)

    def _verdict(self, claim: str) -> Verdict:
        text = claim.lower()
        label = next((label for cue, label in self.cues.items() if cue in text), self.default)
        probabilities = tuple(0.9 if name == label else 0.05 for name in LABELS)
        return Verdict(label, probabilities, "")  # type: ignore[arg-type]
