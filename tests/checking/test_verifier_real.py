"""The packaged support checker with its real weights, on data it never trained on."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.checking.verifier import NLIVerifier, packaged_verifier_path
from rag.datasets.claims import read_healthver, select_split
from rag.evaluation.support import evaluate_support


@pytest.fixture(scope="module")
def verifier() -> NLIVerifier:
    if not (packaged_verifier_path() / "crossencoder.json").is_file():
        pytest.fail(f"the packaged support model is missing from {packaged_verifier_path()}")
    return NLIVerifier.load()


@pytest.mark.slow
def test_held_out_healthver_figures_hold(verifier: NLIVerifier, shared_data: Path) -> None:
    """Guards the shipped artefact and its loading: a broken load scores at chance (macro-F1 ~0.33, AUC ~0.5,
    about a third of refuted pairs judged supported). Measured when shipped: 0.435 / 0.658 / 0.149."""
    pairs = select_split(read_healthver(shared_data / "claims/healthver/healthver_dev.csv"), "validation")
    report = evaluate_support(verifier, pairs)
    assert report.pairs == 372
    assert report.macro_f1 is not None and report.macro_f1 >= 0.40
    assert report.auc_supported is not None and report.auc_supported >= 0.62
    assert report.refuted_judged_supported is not None and report.refuted_judged_supported <= 0.22


@pytest.mark.slow
def test_verdicts_carry_the_window_and_probabilities(verifier: NLIVerifier) -> None:
    passage = " ".join(["Background sentence about hospital logistics and staffing."] * 40)
    passage += " Nitrofurantoin for five days is first-line treatment for acute cystitis in women."
    verdict, empty = verifier.judge([("Nitrofurantoin is first-line for cystitis.", passage), ("[E1]", passage)])
    assert "Nitrofurantoin" in verdict.window and len(verdict.window) < len(passage)
    assert sum(verdict.probabilities) == pytest.approx(1.0, abs=1e-4)
    assert empty.label == "neutral" and empty.probabilities == (0.0, 0.0, 1.0)
