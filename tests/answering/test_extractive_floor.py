"""The extractive answerer: with a reranker, sentences come from the best passage first and only from passages
rated near it; lists flattened into running text are quoted as lists."""

from __future__ import annotations

from collections.abc import Sequence

from rag.answering.extractive import ExtractiveAnswerer
from rag.answering.prompts import EvidenceItem
from rag.checking.verifier import quoted_in
from rag.core.types import Chunk, DocumentMeta, Evidence, RetrieverHit
from rag.text.units import MAX_CHARS, evidence_units, inline_lists


class TopicScorer:
    """Passages (long texts) by whether they name the disease; sentences by the word "treat" alone."""

    name = "topic"

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        out = []
        for _, text in pairs:
            if len(text) > 80:
                out.append(0.9 if "coloboma" in text.lower() else 0.2)
            else:
                out.append(0.95 if "treat" in text.lower() else 0.1)
        return out


def item(key: str, text: str) -> EvidenceItem:
    return EvidenceItem(key=key, title=key, source="test", year="", type="guideline", text=text)


RIGHT = item(
    "E1", "Coloboma may be managed with glasses or contact lenses. Sunglasses help with light sensitivity in coloboma."
)
WRONG = item(
    "E2", "Brain tumours are treated with surgery, radiation and chemotherapy. Tumours treated early do better."
)


def test_off_topic_passages_are_not_quoted_however_well_their_sentences_score() -> None:
    answerer = ExtractiveAnswerer()
    reply = answerer.answer("What are the treatments for coloboma ?", [RIGHT, WRONG], scorer=TopicScorer())
    assert "[E1]" in reply and "[E2]" not in reply
    loose = ExtractiveAnswerer(passage_floor=0.0, second_passage=0.0)
    assert "[E2]" in loose.answer("What are the treatments for coloboma ?", [RIGHT, WRONG], scorer=TopicScorer())


RESOURCES = (
    "These resources address the diagnosis or management of Perrault syndrome: - Gene Review: Gene Review: Perrault "
    "Syndrome - Genetic Testing Registry: Gonadal dysgenesis with auditory dysfunction, autosomal recessive "
    "inheritance - Genetic Testing Registry: Perrault syndrome 2 - Genetic Testing Registry: Perrault syndrome 4 - "
    "Genetic Testing Registry: Perrault syndrome 5 These resources from MedlinePlus offer information about the "
    "diagnosis and management of various health conditions: - Diagnostic Tests - Drug Therapy - Surgery and "
    "Rehabilitation - Genetic Counseling - Palliative Care"
)


def test_a_list_flattened_into_text_is_quoted_as_lists_cut_between_items() -> None:
    units = inline_lists(RESOURCES)
    assert units == [
        "These resources address the diagnosis or management of Perrault syndrome: Gene Review: Gene Review: "
        "Perrault Syndrome; Genetic Testing Registry: Gonadal dysgenesis with auditory dysfunction, autosomal "
        "recessive inheritance; Genetic Testing Registry: Perrault syndrome 2; Genetic Testing Registry: Perrault "
        "syndrome 4",
        "Genetic Testing Registry: Perrault syndrome 5 These resources from MedlinePlus offer information about the "
        "diagnosis and management of various health conditions: Diagnostic Tests; Drug Therapy; Surgery and "
        "Rehabilitation; Genetic Counseling; Palliative Care",
    ]
    # Each is still a quote (the passage's words in its order), so the support check's quote rule accepts it.
    assert all(len(u) <= MAX_CHARS and quoted_in(u, RESOURCES) for u in units)
    prose = "Treat the cause - then the symptoms: rest helps."  # a dash in prose is not a list
    assert inline_lists(prose) == [prose]
    assert evidence_units("Options include: - physical therapy - speech therapy - orthopedic surgery.") == [
        ("", "Options include: physical therapy; speech therapy; orthopedic surgery.")
    ]


def test_a_passage_that_is_only_a_resource_list_is_quoted_not_abstained_on() -> None:
    reply = ExtractiveAnswerer().answer("What are the treatments for Perrault syndrome ?", [item("E1", RESOURCES)])
    assert reply.startswith("SUGGESTIONS:\n1. These resources address the diagnosis or management of Perrault")


class RatedScorer:
    """Passages rated by a table; each sentence by how often it says "therapy"."""

    name = "rated"

    def __init__(self, passages: dict[str, float]) -> None:
        self.passages = passages

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        out = []
        for _, text in pairs:
            rated = [v for k, v in self.passages.items() if text.startswith(k)]
            out.append(rated[0] if rated else 0.2 * text.lower().count("therapy"))
        return out


BEST = item("E1", "Alpha passage. Rest and fluids are the usual care for this. Symptoms settle within a week or two.")
NEAR = item("E2", "Beta passage. Therapy with therapy drugs and therapy sessions. Physical therapy and speech therapy.")


def test_the_best_passage_is_quoted_first_and_another_only_when_rated_close_to_it() -> None:
    question = "How is it treated ?"
    sure = ExtractiveAnswerer().answer(question, [BEST, NEAR], RatedScorer({"Alpha": 0.9, "Beta": 0.6}))
    assert "[E1]" in sure and "[E2]" not in sure  # E2's sentences score higher, but its passage is rated lower
    unsure = ExtractiveAnswerer().answer(question, [BEST, NEAR], RatedScorer({"Alpha": 0.9, "Beta": 0.85}))
    lines = unsure.splitlines()[1:]
    assert [line[-4:] for line in lines] == ["[E1]", "[E1]", "[E2]"]  # best passage first, then the close one
    thin = item("E1", "Alpha passage. Rest and fluids are the usual care for this.")
    padded = ExtractiveAnswerer().answer(question, [thin, NEAR], RatedScorer({"Alpha": 0.9, "Beta": 0.6}))
    assert padded.splitlines()[1].endswith("[E1]") and padded.splitlines()[2].endswith("[E2]")


def reranked(key: str, doc: str, text: str, rating: float) -> EvidenceItem:
    chunk = Chunk(f"c-{key}", doc, text, "", (), 0, len(text), None, None, 1, f"h-{key}")
    meta = DocumentMeta(title=doc, doc_type="guideline", source="test")
    evidence = Evidence(chunk, meta, rating, {"rerank": RetrieverHit(1, rating)})
    return EvidenceItem(key=key, title=doc, source="test", year="", type="guideline", text=text, evidence=evidence)


FULL = (
    "Rest and fluids are the usual care for this. Symptoms settle within a week or two. "
    "Paracetamol eases the aches and the fever."
)


def test_another_source_rated_level_with_the_best_is_quoted_before_the_best_passages_third_sentence() -> None:
    question = "How is it treated ?"

    def cited(other_doc: str, rating: float, equal_source: float = 0.95) -> list[str]:
        evidence = [reranked("E1", "alpha", FULL, 0.9), reranked("E2", other_doc, NEAR.text, rating)]
        reply = ExtractiveAnswerer(equal_source=equal_source).answer(question, evidence, RatedScorer({}))
        return [line[-4:] for line in reply.splitlines()[1:]]

    # Rated within 0.95 of the best, another document's page may be the one that answers: it is cited too.
    assert cited("beta", 0.88) == ["[E1]", "[E1]", "[E2]"]
    assert cited("beta", 0.88, equal_source=1.01) == ["[E1]", "[E1]", "[E1]"]  # the rule off
    assert cited("beta", 0.8) == ["[E1]", "[E1]", "[E1]"]  # close (>= 0.8), not level: the best passage fills up
    assert cited("alpha", 0.88) == ["[E1]", "[E1]", "[E1]"]  # another part of the same document is no new source


def test_nothing_quotable_in_the_passages_worth_quoting_is_insufficient_evidence() -> None:
    short = item("E1", "Rest. Fluids.")
    reply = ExtractiveAnswerer().answer("How is it treated ?", [short, WRONG], RatedScorer({"Rest": 0.9}))
    assert reply == "INSUFFICIENT EVIDENCE"


class FlatScorer:
    """Every passage alike; list items score by a fixed table (the later items a little higher), other text low."""

    name = "flat"

    def __init__(self, items: dict[str, float]) -> None:
        self.items = items

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return [self._one(text) for _, text in pairs]

    def _one(self, text: str) -> float:
        return next((v for k, v in self.items.items() if k in text), 0.9 if len(text) > 200 else 0.1)


OPTIONS = item(
    "E1",
    "## First-line treatment\n\nFirst-line options are:\n\n- Drug alpha 100 mg twice daily for 5 days.\n"
    "- Drug beta 160 mg twice daily for 3 days.\n- Drug gamma 3 g as a single dose.\n"
    "- Drug delta 400 mg twice daily for 3 days.\n",
)


def test_several_items_of_a_list_are_quoted_from_the_top_of_the_list() -> None:
    # The scorer prefers the third and fourth options: that the list answers is kept, its order decides which items.
    scorer = FlatScorer({"alpha": 0.50, "beta": 0.55, "gamma": 0.70, "delta": 0.80})
    reply = ExtractiveAnswerer(max_suggestions=2).answer("What is the first-line treatment?", [OPTIONS], scorer=scorer)
    assert reply.index("alpha") < reply.index("beta") and "gamma" not in reply and "delta" not in reply
    # One item chosen alone stays: it may be the option the question is about.
    single = ExtractiveAnswerer(max_suggestions=1).answer("What dose of delta?", [OPTIONS], scorer=scorer)
    assert "delta" in single and "alpha" not in single
    # A second list (after text) is a list of its own: its items are not pulled to the first list's top.
    second = "\nSecond-line options follow.\n\n- Drug omega 1 g daily for a week.\n- Drug sigma 2 g daily for a week.\n"
    two = item("E1", OPTIONS.text + second)
    picky = FlatScorer({"omega": 0.9, "sigma": 0.95, "alpha": 0.1, "beta": 0.1, "gamma": 0.1, "delta": 0.1})
    reply = ExtractiveAnswerer(max_suggestions=2).answer("Second line?", [two], scorer=picky)
    assert reply.index("omega") < reply.index("sigma") and "alpha" not in reply
