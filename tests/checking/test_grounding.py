"""The model-free grounding check: a suggestion most of whose words its cited evidence never uses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from indexer import build_index
from rag.answering.engine import Engine
from rag.checking.grounding import new_words, not_from_evidence
from rag.core.config import IndexSettings, Settings, with_overrides
from rag.models.generators.base import ChatMessage
from rag.testing import HashEmbedder, LexicalReranker, ScriptedGenerator, ScriptedJudge

EMBEDDER = HashEmbedder(dim=32, max_tokens=96)

RESOURCES = (
    "These resources address the diagnosis or management of BFNS: - Epilepsy Action: Benign Neonatal Convulsions "
    "- Gene Review: KCNQ2-Related Disorders - MedlinePlus Encyclopedia: EEG"
)


def test_invented_content_is_caught_and_paraphrases_are_not() -> None:
    invented = "Medications such as phenobarbital, valproate, and lamotrigine are commonly used to treat BFNS."
    assert not_from_evidence(invented, RESOURCES)[:3] == ["medications", "phenobarbital", "valproate"]
    passage = "Nitrofurantoin 100 mg twice daily for five days treats acute cystitis in women."
    assert not_from_evidence("Nitrofurantoin for five days treats cystitis in women.", passage) == []
    assert new_words("Nitrofurantoin treatment of cystitis", passage) == []  # "treatment" meets "treats"
    # Two new words, or a minority of new words: the support checker's to judge.
    assert not_from_evidence("Amoxicillin twice daily", passage) == []
    assert new_words("Nitrofurantoin is preferred and well tolerated for acute cystitis", passage) == [
        "preferred",
        "well",
        "tolerated",
    ]
    assert not_from_evidence("Nitrofurantoin is preferred and well tolerated for acute cystitis", passage) == []


def test_the_engine_removes_what_the_checker_let_through(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "bfns.md").write_text(f"---\ntitle: BFNS\ntype: guideline\n---\n{RESOURCES}\n", encoding="utf-8")
    build_index(
        [src], tmp_path / "index", IndexSettings.model_validate({"cache_dir": str(tmp_path / "c")}), embedder=EMBEDDER
    )

    def reply(messages: Sequence[ChatMessage]) -> str:
        return (
            "SUGGESTIONS:\n1. Medications such as phenobarbital, valproate, and lamotrigine are commonly used. [E1]\n"
            "2. Gene Review: KCNQ2-Related Disorders [E1]"
        )

    settings = with_overrides(Settings(), {"answer.min_evidence_score": -1.0, "answer.fallback_to_extractive": False})
    engine = Engine.load(
        tmp_path / "index",
        ScriptedGenerator(reply),
        settings,
        embedder=EMBEDDER,
        checker=ScriptedJudge({}, default="supports"),  # a checker that lets everything through
        reranker=LexicalReranker(),
    )
    answer = engine.ask("What are the treatments for benign familial neonatal seizures?")
    (kept,) = answer.suggestions  # the quoted item, shown with its list's lead-in (rag.list_quotes)
    assert kept.text.startswith("These resources address") and "Gene Review: KCNQ2-Related Disorders" in kept.text
    (removed,) = answer.removed_suggestions
    assert removed.label == "supports" and not removed.supported
    assert [f.kind for f in removed.flags] == ["not_in_evidence"] and "phenobarbital" in removed.flags[0].message
