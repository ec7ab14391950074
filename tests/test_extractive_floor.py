"""The extractive answerer with a reranker: sentences come only from passages rated near the best one."""

from __future__ import annotations

from collections.abc import Sequence

from rag.extractive import ExtractiveAnswerer
from rag.prompts import EvidenceItem


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
    loose = ExtractiveAnswerer(passage_floor=0.0)
    assert "[E2]" in loose.answer("What are the treatments for coloboma ?", [RIGHT, WRONG], scorer=TopicScorer())
