"""The n-gram drafter behind prompt-lookup decoding (the decoding loop itself runs on llama.cpp in test_llamacpp)."""

from __future__ import annotations

from rag.models.generators.lookup_decode import NgramDrafter


def test_guesses_what_followed_the_longest_matching_ngram() -> None:
    # "5 6" occurs twice: after "4 5 6" comes 7, after "9 5 6" comes 1; the 3-gram decides
    drafter = NgramDrafter([4, 5, 6, 7, 8, 9, 5, 6, 1, 2, 3])
    for token in (4, 5, 6):
        drafter.append(token)
    assert drafter.draft(3) == [7, 8, 9]
    assert drafter.draft(1) == [7]
    assert drafter.draft(0) == []


def test_the_most_recent_occurrence_wins_and_unseen_tokens_give_no_guess() -> None:
    drafter = NgramDrafter([1, 2, 3, 1, 2, 4])
    drafter.append(2)  # last 1-gram "2" last followed by 4; no earlier "4 2" or "2 4 2"
    assert drafter.draft(5) == [4, 2]
    drafter.append(99)
    assert drafter.draft(5) == []
    assert NgramDrafter([]).draft(4) == []


def test_guesses_never_run_past_the_known_sequence() -> None:
    drafter = NgramDrafter([7, 7, 7])
    assert drafter.draft(10) == [7]  # "7 7" followed by 7 at the end: one token known after it
