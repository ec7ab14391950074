"""A fragment a model quotes is shown as the sentence or flattened list it came from
(rag.answering.quote_completion)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from indexer import build_index
from rag.answering.citations import ParsedReply, ParsedSuggestion, attribute_quotes, parse_reply
from rag.answering.engine import Engine
from rag.answering.prompts import EvidenceItem
from rag.answering.quote_completion import complete_quotes
from rag.checking.support import LexicalSupportChecker
from rag.core.config import IndexSettings, Settings, with_overrides
from rag.testing import HashEmbedder, LexicalReranker, ScriptedGenerator

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
FLARE = "Colchicine or a nonsteroidal anti-inflammatory drug relieves a gout flare within days."
RAISED = "In severe cases laser surgery or vitrectomy may be offered by a retina specialist."
REPEATED = "Laser surgery is offered early when the retina swells in diabetic eye disease."


def item(key: str, text: str) -> EvidenceItem:
    return EvidenceItem(key, "Gout", "GHR", "n.d.", "consumer-health", text)


def completed_as_the_engine_does(parsed: ParsedReply, evidence: list[EvidenceItem]) -> ParsedReply:
    """Uncited quotes are cited first (`attribute_quotes`), then fragments completed, as `Engine.ask` runs them."""
    return complete_quotes(attribute_quotes(parsed, {e.key: e.shown for e in evidence}), evidence)


def test_fragments_become_their_sentence_or_list_once_and_other_suggestions_stay() -> None:
    evidence = [item("E1", RESOURCES), item("E2", f"{FLARE} Rest the joint and raise it.")]
    parsed = parse_reply(
        "SUGGESTIONS:\n1. Gene Review: Gout Overview [E1]\n2. Drug Therapy [E1]\n3. Diagnostic Tests; Drug Therapy\n"
        "4. Colchicine or a nonsteroidal anti-inflammatory drug [E2]\n5. Drug Therapy [E2]\n6. Therapy [E1]\n"
        "7. Colchicine relieves gout. [E2]"
    )
    done = completed_as_the_engine_does(parsed, evidence).suggestions
    assert [(s.text, s.citations, s.completed) for s in done] == [
        (LEAD, ("E1",), True),
        (MEDLINE, ("E1",), True),
        ("Diagnostic Tests; Drug Therapy", (), False),  # uncited and under five words: not attributed
        (FLARE, ("E2",), True),
        ("Drug Therapy", ("E2",), False),  # cites a passage without those words: left for the checker
        ("Therapy", ("E1",), False),  # one word could come from anywhere
        ("Colchicine relieves gout.", ("E2",), False),  # not word for word: a paraphrase stays as written
    ]


def test_a_whole_unit_an_ambiguous_fragment_and_an_abstention_stay_as_written() -> None:
    evidence = [item("E1", f"{RAISED} {REPEATED}")]
    whole = parse_reply(f"1. {RAISED} [E1]")
    assert complete_quotes(whole, evidence) == whole
    ambiguous = parse_reply("1. Laser surgery [E1]")  # in both sentences: which one it meant is a guess
    assert complete_quotes(ambiguous, evidence) == ambiguous
    assert complete_quotes(parse_reply("1. vitrectomy may be offered [E1]"), evidence).suggestions[0].text == RAISED
    glossed = "Treatment may include: Topical (applied to the skin) corticosteroids Skin lightening agents Laser"
    dropped_gloss = complete_quotes(parse_reply("1. Topical corticosteroids [E1]"), [item("E1", glossed)])
    assert [(s.text, s.completed) for s in dropped_gloss.suggestions] == [(glossed, True)]
    abstained = ParsedReply((), abstained=True, usable=True, numeric_keys=False)
    assert complete_quotes(abstained, evidence) is abstained
    short = ParsedReply((ParsedSuggestion("Drug Therapy", ()),), abstained=False, usable=False, numeric_keys=False)
    assert completed_as_the_engine_does(short, [item("E1", RESOURCES)]) == short  # uncited and short: could be anyone's
    uncited = replace(short, suggestions=(ParsedSuggestion("Genetic Testing Registry: Familial gout", ()),))
    completed = completed_as_the_engine_does(uncited, [item("E1", RESOURCES)])
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
    assert "quote_completed" in [f.kind for f in shown[0].flags]
