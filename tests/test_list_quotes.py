"""A list item a model quotes alone is shown with its list's lead-in (rag.list_quotes), unit and through the engine."""

from __future__ import annotations

from pathlib import Path

from indexer import build_index
from rag.citations import ParsedReply, ParsedSuggestion, parse_reply
from rag.config import IndexSettings, Settings, with_overrides
from rag.embed import HashEmbedder
from rag.engine import Engine
from rag.extractive import flattened_list_units
from rag.generators.fake import ScriptedGenerator
from rag.list_quotes import complete_list_items
from rag.prompts import EvidenceItem
from rag.rerank import LexicalReranker
from rag.support import LexicalSupportChecker

RESOURCES = (
    "These resources address the diagnosis or management of gout: - Gene Review: Gout Overview - Genetic Testing "
    "Registry: Familial gout These resources from MedlinePlus offer information about the diagnosis and management "
    "of various health conditions: - Diagnostic Tests - Drug Therapy - Surgery and Rehabilitation"
)
LEAD = "These resources address the diagnosis or management of gout: Gene Review: Gout Overview"
MEDLINE = (
    "Genetic Testing Registry: Familial gout These resources from MedlinePlus offer information about the diagnosis "
    "and management of various health conditions: Diagnostic Tests; Drug Therapy; Surgery and Rehabilitation"
)


def item(key: str, text: str) -> EvidenceItem:
    return EvidenceItem(key, "Gout", "GHR", "n.d.", "consumer-health", text)


def test_flattened_list_units_are_the_extractive_units_of_one_line_lists_only() -> None:
    assert flattened_list_units(RESOURCES) == [LEAD, MEDLINE]
    assert flattened_list_units("Options:\n- colchicine\n- naproxen") == []  # a Markdown list is not flattened
    assert flattened_list_units("Rest the joint. Drink water.") == []


def test_quoted_items_become_their_list_unit_once_and_other_suggestions_stay() -> None:
    evidence = [item("E1", RESOURCES), item("E2", "Colchicine relieves a gout flare. Rest the joint.")]
    parsed = parse_reply(
        "SUGGESTIONS:\n1. Gene Review: Gout Overview [E1]\n2. Drug Therapy [E1]\n3. Diagnostic Tests\n"
        "4. Colchicine relieves a gout flare. [E2]\n5. Drug Therapy [E2]\n6. Therapy [E1]"
    )
    done = complete_list_items(parsed, evidence).suggestions
    assert [(s.text, s.citations, s.completed) for s in done] == [
        (LEAD, ("E1",), True),
        (MEDLINE, ("E1",), True),  # "Diagnostic Tests" (uncited) is an item of the same unit: shown once
        ("Colchicine relieves a gout flare.", ("E2",), False),
        ("Drug Therapy", ("E2",), False),  # cites a passage that has no such list: left for the checker
        ("Therapy", ("E1",), False),  # one word could be anyone's
    ]
    whole = parse_reply(f"1. {LEAD} [E1]")
    assert complete_list_items(whole, evidence) == whole  # already the unit
    abstained = ParsedReply((), abstained=True, usable=True, numeric_keys=False)
    assert complete_list_items(abstained, evidence) is abstained
    uncited = ParsedReply((ParsedSuggestion("Drug Therapy", ()),), abstained=False, usable=False, numeric_keys=False)
    completed = complete_list_items(uncited, evidence)
    assert completed.usable and completed.suggestions[0].citations == ("E1",)


def test_the_engine_shows_a_quoted_list_item_with_its_lead_in_and_flags_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "gout.md").write_text(
        f"---\ntitle: Gout\nissuer: GHR\ntype: consumer-health\n---\n{RESOURCES}\n", encoding="utf-8"
    )
    embedder = HashEmbedder(dim=32, max_tokens=96)
    settings = IndexSettings.model_validate({"cache_dir": str(tmp_path / "cache")})
    build_index([src], tmp_path / "index", settings, embedder=embedder)
    engine = Engine.load(
        tmp_path / "index",
        ScriptedGenerator(lambda m: "SUGGESTIONS:\n1. Gene Review: Gout Overview [E1]"),
        with_overrides(Settings(), {"answer.min_evidence_score": -1.0, "answer.fallback_to_extractive": False}),
        embedder=embedder,
        checker=LexicalSupportChecker(),
        reranker=LexicalReranker(),
    )
    answer = engine.ask("What are the treatments for gout?")
    shown = answer.suggestions + answer.removed_suggestions
    assert [s.text for s in shown] == [LEAD]
    assert "list_completed" in [f.kind for f in shown[0].flags]
