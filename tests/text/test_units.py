"""A recommendation's grade stays with the unit it qualifies, so it is quoted with it and never alone."""

from __future__ import annotations

from rag.text.units import evidence_lines, evidence_units

GUIDELINE = """### Management

1. The panel recommends spirometry to confirm COPD in all adults. (**Strong For**)
2. The panel suggests classification into two groups:
   1. Patients with frequent exacerbations
   2. Patients without frequent exacerbations

   (**Weak For**)

Surveillance of stable cysts with MRI every two years is suggested. (**Conditional recommendation, Very low quality \
evidence**)
"""


def test_a_grade_joins_the_unit_before_it() -> None:
    units = [sentence for _, sentence in evidence_units(GUIDELINE)]
    assert "The panel recommends spirometry to confirm COPD in all adults. (**Strong For**)" in units
    assert units[-1] == (
        "Surveillance of stable cysts with MRI every two years is suggested. "
        "(**Conditional recommendation, Very low quality evidence**)"
    )
    assert "Patients without frequent exacerbations (**Weak For**)" in units
    assert not any(u.startswith("(") for u in units)


def test_a_grade_after_a_heading_or_first_stays_context_and_plain_text_is_unchanged() -> None:
    lines = evidence_lines("### Grades\n(**Strong For**)\n\nRest and fluids help most patients recover at home.")
    assert lines[:2] == [("### Grades", False), ("(**Strong For**)", False)]
    plain = "Rest helps. (A higher than normal blood sugar level is a risk factor for heart disease.)"
    assert [s for _, s in evidence_units(plain)] == [
        "(A higher than normal blood sugar level is a risk factor for heart disease.)"
    ]


def test_a_bold_label_with_a_pointer_elsewhere_is_context_not_a_unit() -> None:
    text = (
        "**Treatment** (see Figure 1 in the original guideline document)\n\n"
        "**Antibiotics**: amoxicillin is recommended for 10 days in children with acute sinusitis."
    )
    assert evidence_lines(text)[0] == ("**Treatment** (see Figure 1 in the original guideline document)", False)
    assert [s for _, s in evidence_units(text)] == [
        "**Antibiotics**: amoxicillin is recommended for 10 days in children with acute sinusitis."
    ]
