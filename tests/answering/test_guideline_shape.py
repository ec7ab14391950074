"""Guideline-shaped answers: an option the evidence contraindicates for the stated condition is never first and
is flagged; boilerplate sections (referral, sources) never lead a treatment answer; a regimen comes before the
hedge that introduces it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rag.answering.answer import Suggestion
from rag.answering.contraindications import contraindicated_last, contraindications
from rag.answering.evidence_policy import demote_boilerplate, off_question_section
from rag.answering.extractive import ExtractiveAnswerer
from rag.answering.patient import Patient
from rag.answering.prompts import EvidenceItem
from rag.core.types import Chunk, DocumentMeta, Evidence, RetrieverHit

AF = (
    "Direct oral anticoagulants (DOACs: apixaban, dabigatran) are preferred over warfarin in eligible patients. "
    "DOACs are contraindicated in patients with mechanical heart valves or moderate-to-severe mitral stenosis; "
    "these patients need warfarin."
)


def item(key: str, text: str, section: str = "Treatment", score: float = 0.9) -> EvidenceItem:
    chunk = Chunk(f"{key}#0", key, text, section, ("Guideline", section), 0, len(text), None, None, 1, f"h-{key}")
    meta = DocumentMeta(title=key, doc_type="guideline", source="test")
    evidence = Evidence(chunk=chunk, meta=meta, score=score, retrievers={"rerank": RetrieverHit(1, score)})
    return EvidenceItem(key=key, title=key, source="test", year="", type="guideline", text=text, evidence=evidence)


def suggestion(text: str) -> Suggestion:
    return Suggestion(text=text, citations=("E1",), support=0.9, supported=True)


PREFERRED = suggestion("DOACs (apixaban, dabigatran) are preferred over warfarin in eligible patients.")
WARNING = suggestion(
    "DOACs are contraindicated in patients with mechanical heart valves; these patients need warfarin."
)
INR = suggestion("When warfarin is used, the target INR is 2.0-3.0.")


def test_statements_of_contraindication_are_read_per_condition() -> None:
    found = contraindications([item("E1", AF)])
    assert [(c.option, c.condition, c.key) for c in found] == [
        ("DOACs", "mechanical heart valves", "E1"),
        ("DOACs", "moderate-to-severe mitral stenosis", "E1"),
    ]
    other = item("E2", "Do not use NSAIDs in people with heart failure. Metformin should not be used in pregnancy.")
    assert {(c.option, c.condition) for c in contraindications([other])} == {
        ("NSAIDs", "heart failure"),
        ("Metformin", "pregnancy"),
    }


def test_an_option_contraindicated_for_the_stated_condition_goes_last_and_is_flagged() -> None:
    question = "Which anticoagulant for atrial fibrillation in a patient with a mechanical heart valve?"
    ordered = contraindicated_last((PREFERRED, WARNING, INR), [item("E1", AF)], question, None)
    assert [s.text for s in ordered] == [WARNING.text, INR.text, PREFERRED.text]
    assert [f.kind for f in ordered[-1].flags] == ["contraindication"]
    assert "mechanical heart valves" in ordered[-1].flags[0].message and "[E1]" in ordered[-1].flags[0].message
    assert not ordered[0].flags  # the warning itself is not flagged


def test_the_patient_record_states_conditions_too_and_nothing_moves_without_one() -> None:
    plain = "Which anticoagulant for atrial fibrillation?"
    assert contraindicated_last((PREFERRED, WARNING), [item("E1", AF)], plain, None) == (PREFERRED, WARNING)
    valve = Patient(conditions=("atrial fibrillation", "mechanical mitral valve", "heart"))
    assert contraindicated_last((PREFERRED, WARNING), [item("E1", AF)], plain, valve)[0] == WARNING
    nothing = Patient(conditions=("gout", "a condition no evidence names"))
    assert contraindicated_last((PREFERRED, WARNING), [item("E1", AF)], plain, nothing) == (PREFERRED, WARNING)


def test_boilerplate_sections_are_off_question_unless_asked() -> None:
    treat = "How should stable COPD with frequent exacerbations be treated?"
    assert off_question_section(treat, ("COPD", "When to refer"))
    assert off_question_section(treat, ("Guideline", "Guideline Objective(s)"))
    assert not off_question_section(treat, ("COPD", "Follow-up treatment"))
    assert not off_question_section("When should I refer a COPD patient to a specialist?", ("COPD", "When to refer"))
    assert not off_question_section(treat, ())


def test_demoted_boilerplate_falls_below_the_treatment_passage_in_order_and_rating() -> None:
    refer = item("E1", "Refer when the diagnosis is uncertain.", "When to refer", 0.9)
    treat = item("E2", "Give LAMA plus LABA for frequent exacerbations.", "Follow-up treatment", 0.6)
    assert refer.evidence is not None and treat.evidence is not None
    ordered = demote_boilerplate("How should COPD be treated?", [refer.evidence, treat.evidence])
    assert [e.chunk.doc_id for e in ordered] == ["E2", "E1"]
    assert ordered[1].retrievers["rerank"].score == 0.45 and ordered[1].score == 0.45


class FlatScorer:
    name = "flat"

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return [0.8 for _ in pairs]


def test_a_regimen_comes_before_the_hedge_that_opens_its_passage() -> None:
    text = (
        "The choice depends on local resistance and allergy history. "
        "Nitrofurantoin 100 mg twice daily for 5 days is first-line."
    )
    reply = ExtractiveAnswerer().answer("first-line treatment of cystitis?", [item("E1", text)], scorer=FlatScorer())
    lines = reply.splitlines()[1:]
    assert lines[0].startswith("1. Nitrofurantoin") and "choice depends" in lines[1]


def test_a_model_answer_that_says_nothing_to_do_falls_back_to_the_quoted_regimen(tmp_path: Path) -> None:
    from indexer import build_index
    from rag.answering.engine import Engine
    from rag.answering.replies import NOTHING_TO_DO_REPLY
    from rag.core.config import IndexSettings, Settings
    from rag.testing import HashEmbedder, LexicalReranker, ScriptedGenerator

    folder = tmp_path / "guidelines"
    folder.mkdir()
    (folder / "cystitis.md").write_text(
        "# Cystitis\n\n## First-line treatment\n\nThe choice depends on local resistance and allergy history. "
        "Nitrofurantoin 100 mg twice daily for 5 days is first-line for cystitis in women.\n"
    )
    embedder = HashEmbedder(dim=32, max_tokens=64)
    build_index([folder], tmp_path / "index", IndexSettings(), embedder=embedder, progress=False)
    settings = Settings.model_validate({"answer": {"min_evidence_score": -1.0, "support_checker": "calibrated"}})
    hedge = "SUGGESTIONS:\n1. The choice depends on local resistance and allergy history. [E1]"
    engine = Engine.load(tmp_path / "index", settings=settings, generator=ScriptedGenerator(lambda _: hedge),
                         embedder=embedder, reranker=LexicalReranker())  # fmt: skip
    answer = engine.ask("What is the first-line treatment for cystitis?")
    assert answer.fallback == NOTHING_TO_DO_REPLY
    assert any("Nitrofurantoin" in s.text for s in answer.suggestions)
    assert any("choice depends" in s.text for s in answer.removed_suggestions)  # kept for audit
    background = engine.ask("What causes cystitis?")  # not a what-to-do question: the model's answer stands
    assert background.fallback is None


def test_sections_that_describe_a_guideline_are_off_question_unless_every_heading_word_is_asked() -> None:
    treat = "Which antibiotic for a child's sinusitis, and for what condition is it first line?"
    assert off_question_section(treat, ("Disease/Condition(s)",))  # "condition" alone does not ask for it
    assert off_question_section(treat, ("Interventions and Practices Considered",))
    assert off_question_section(treat, ("Clinical Algorithm(s)",))
    assert not off_question_section(treat, ("Major Recommendations", "Antibiotic Therapy"))
    assert not off_question_section(
        "Which interventions and practices were considered?", ("Interventions and Practices Considered",)
    )
