"""Polarity-flipped training claims: each rule, the order they apply in, and what is left alone."""

from __future__ import annotations

import pytest

from rag.datasets.claims import ClaimPair
from rag.training.claim_negation import negate_claim, negated_pairs


@pytest.mark.parametrize(
    ("claim", "flipped"),
    [
        ("Vitamin D does not prevent COVID-19.", "Vitamin D does prevent COVID-19."),
        ("Masks cannot stop the virus.", "Masks can stop the virus."),
        ("Remdesivir reduces mortality.", "Remdesivir increases mortality."),
        ("Higher doses help.", "Lower doses help."),
        ("Zinc cures colds.", "Zinc does not cure colds."),
        ("The vaccine is safe in pregnancy.", "The vaccine is unsafe in pregnancy."),
        ("Hydroxychloroquine is a treatment for malaria.", "Hydroxychloroquine is not a treatment for malaria."),
    ],
)
def test_each_rule(claim: str, flipped: str) -> None:
    assert negate_claim(claim) == flipped


def test_negation_is_removed_before_any_other_rule_and_nothing_fits_gives_none() -> None:
    assert negate_claim("Aspirin never increases bleeding.") == "Aspirin increases bleeding."
    assert negate_claim("Garlic and onions in soup") is None


def test_only_supported_pairs_get_a_refuting_copy() -> None:
    pairs = [
        ClaimPair("Drug X reduces pain", "ev", "supports", "healthver", "t1"),
        ClaimPair("Drug X reduces pain", "ev", "neutral", "healthver", "t1"),
        ClaimPair("Garlic soup", "ev", "supports", "healthver", "t2"),
    ]
    (copy,) = negated_pairs(pairs)
    assert copy.claim == "Drug X increases pain" and copy.label == "refutes" and copy.group == "t1"
