"""Decoding constraint for local models: a numbered suggestion starts with words, not with a citation.

Small models decoding greedily fall into "1. [E1]\\n2. [E2]": after the list number, the citation bracket (which
ends every line) is more probable than any one of the many possible first words. Such a line carries no claim
and the engine's parser rejects it. This processor forbids a bracket as the first token of a numbered line; it
changes nothing else, so any reply the grammar allows is still reachable.
"""

from __future__ import annotations

import re
from typing import Any

LIST_MARKER = re.compile(r"(?:^|\n)\s*\d{1,2}[.)]\s*$")


def bracket_token_ids(tokenizer: Any) -> list[int]:
    """Ids of the vocabulary's tokens whose text starts (after spaces) with "[" ."""
    # Decoding all ~50k tokens one by one takes a second; a token that decodes to "[..." holds "[" in its raw
    # form too (byte-level BPE and SentencePiece keep ASCII as is), except byte-fallback pieces such as <0x5B>.
    raw = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    candidates = [i for i, piece in enumerate(raw) if piece is not None and ("[" in piece or piece.startswith("<0x"))]
    return [i for i in candidates if tokenizer.decode([i]).lstrip().startswith("[")]


class NoCitationAtLineStart:
    """A transformers logits processor (duck-typed: `__call__(input_ids, scores) -> scores`)."""

    def __init__(self, tokenizer: Any, prompt_length: int, banned: list[int]) -> None:
        self._tokenizer = tokenizer
        self._prompt_length = prompt_length
        self._banned = banned

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        text = self._tokenizer.decode(input_ids[0, self._prompt_length :].tolist(), skip_special_tokens=True)
        if self._banned and LIST_MARKER.search(text):
            scores[:, self._banned] = float("-inf")
        return scores
