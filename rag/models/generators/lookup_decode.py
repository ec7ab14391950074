"""Greedy decoding on llama.cpp with tokens guessed from the prompt (prompt-lookup speculative decoding).

A cited suggestion mostly copies phrases from its evidence, so the tokens after the last few generated ones are
often the tokens that followed the same n-gram in the prompt. Those guesses are read in one batch with the next
token; the model's own greedy choice at each position keeps the guesses it agrees with and replaces the first it
does not. On 2 cores a batch of 9 tokens costs little more than one decoding step (the weights are read once),
so each kept guess is a step saved. The reply is the greedy reply: every kept token is the model's argmax, after
the same logits processor, at its position (batched and single-token matrix products may round differently, so a
near tie can in principle resolve the other way).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# n-grams tried from longest to shortest; a 1-gram still guesses well inside a copied phrase
MAX_NGRAM = 3
MIN_NGRAM = 1

Pick = Callable[[list[int], Any], int]  # (reply so far, logits row) -> chosen token
Done = Callable[[list[int]], bool]  # reply so far -> stop now (a stop string, the token budget)


class NgramDrafter:
    """Where each recent n-gram last occurred in the sequence, to guess what follows it again."""

    def __init__(self, tokens: Sequence[int]) -> None:
        self._tokens: list[int] = []
        self._next_of: dict[tuple[int, ...], int] = {}  # n-gram -> index of the token that followed it last
        for token in tokens:
            self.append(token)

    def append(self, token: int) -> None:
        seq = self._tokens
        end = len(seq)  # the n-grams ending before `token` now have a continuation: `token`, at index `end`
        for n in range(MIN_NGRAM, MAX_NGRAM + 1):
            if end >= n:
                self._next_of[tuple(seq[end - n : end])] = end
        seq.append(int(token))

    def draft(self, limit: int) -> list[int]:
        """Up to `limit` tokens that followed the longest earlier occurrence of the sequence's last n-gram."""
        seq = self._tokens
        if limit <= 0:
            return []
        for n in range(MAX_NGRAM, MIN_NGRAM - 1, -1):
            if len(seq) < n:
                continue
            start = self._next_of.get(tuple(seq[-n:]))
            if start is not None:
                return seq[start : start + limit]
        return []


def greedy_with_lookup(
    llama: Any,
    prompt: Sequence[int],
    first_logits: Any,
    *,
    pick: Pick,
    is_end: Callable[[int], bool],
    done: Done,
    draft_tokens: int,
    budget: int,
) -> tuple[list[int], bool]:
    """Decode after an already evaluated prompt; returns (reply tokens, stopped at an end token or stop string).

    `llama` is a llama_cpp.Llama whose context holds `prompt` and `first_logits` the logits after it. Guesses come
    from `NgramDrafter` over the prompt and the reply; `draft_tokens` = 0 decodes one token at a time.
    """
    prompt_length = len(prompt)
    drafter = NgramDrafter(prompt)
    reply: list[int] = []
    pending = pick(reply, first_logits)
    while True:
        if is_end(pending):
            return reply, True
        reply.append(pending)
        drafter.append(pending)
        if done(reply):
            return reply, True
        if len(reply) >= budget:
            return reply, False
        guesses = drafter.draft(min(draft_tokens, budget - len(reply)))
        rows = read_batch(llama, [pending, *guesses])
        for i, row in enumerate(rows):  # one row more than guesses: the last always sets `pending`
            chosen = pick(reply, row)
            if i < len(guesses) and chosen == guesses[i] and not is_end(chosen):
                reply.append(chosen)
                drafter.append(chosen)
                stopped = done(reply)
                if stopped or len(reply) >= budget:
                    forget_after(llama, prompt_length + len(reply))
                    return reply, stopped
                continue
            pending = chosen
            break
        # the context holds the prompt and the reply except its last token, which is read with the next guesses
        forget_after(llama, prompt_length + len(reply))


def read_batch(llama: Any, tokens: list[int]) -> list[Any]:
    """Read `tokens` after the context's n_tokens, with logits at every position; rows are views, used at once."""
    import llama_cpp

    n_past = int(llama.n_tokens)
    llama._ctx.kv_cache_seq_rm(-1, n_past, -1)
    llama._batch.set_batch(batch=tokens, n_past=n_past, logits_all=True)
    llama._ctx.decode(llama._batch)
    llama.input_ids[n_past : n_past + len(tokens)] = tokens
    llama.n_tokens = n_past + len(tokens)
    vocab = int(llama.n_vocab())
    return [
        np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama.ctx, i), shape=(vocab,)) for i in range(len(tokens))
    ]


def forget_after(llama: Any, n_tokens: int) -> None:
    """Forget every context position from `n_tokens` on (the guesses the model did not make)."""
    if n_tokens < int(llama.n_tokens):
        llama.n_tokens = n_tokens
        llama._ctx.kv_cache_seq_rm(-1, n_tokens, -1)
