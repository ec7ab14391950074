"""The shipped patient cases: at least 30, each answerable from the demo guideline it names."""

from __future__ import annotations

import re
from pathlib import Path

from rag.datasets.guideline_questions import contains_evidence
from rag.datasets.patient_cases import read_patient_cases

ROOT = Path(__file__).resolve().parents[2]


def test_the_patient_cases_are_judged_against_the_demo_guidelines_they_name() -> None:
    cases = read_patient_cases(ROOT / "corpora" / "examples" / "patient_cases.jsonl")
    guidelines = {}
    for path in (ROOT / "corpora" / "guidelines").glob("*.md"):
        text = path.read_text(encoding="utf-8")
        found = re.search(r"^id:\s*(\S+)", text, re.M)
        assert found, path
        guidelines[found.group(1)] = " ".join(text.lower().split())
    assert len(cases) >= 30 and len({c.doc_id for c in cases}) >= 9
    assert sum(not c.excluded for c in cases) >= 4  # controls: the patient's facts change nothing
    for case in cases:
        body = guidelines[case.doc_id]
        assert any(term in body for term in case.expected), case.case_id
        # The evidence is the guideline's own words (sentences copied from one place or several).
        assert contains_evidence(body, case.evidence), case.case_id
