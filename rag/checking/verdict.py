"""What a support checker says about one (claim, evidence) pair, and the protocol every checker follows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Label = Literal["supports", "refutes", "neutral"]
LABELS: tuple[Label, ...] = ("supports", "refutes", "neutral")
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
    """A support checker: the trained cross-encoder (`rag.checking.verifier.NLIVerifier`) or the calibrated fallback."""

    @property
    def name(self) -> str: ...

    def judge(self, pairs: Sequence[Pair]) -> list[Verdict]:
        """One verdict per (claim, evidence) pair."""
        ...

    def score(self, pairs: Sequence[Pair]) -> Floats:
        """Probability that each evidence passage supports its claim."""
        ...

    def supported(self, score: float) -> bool: ...
