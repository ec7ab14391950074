"""Generator backends behind one protocol: a local Hugging Face model, a GGUF on llama.cpp, an OpenAI-compatible
endpoint (the deterministic fake is `rag.testing.ScriptedGenerator`).

    from rag.models.generators import ChatMessage, load_generator
    generator = load_generator(settings.generator)
    reply = generator.generate([ChatMessage("user", "...")], max_new_tokens=128)

Importing this package loads no model and imports neither torch, transformers nor llama_cpp.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from rag.core.config import GeneratorSettings
from rag.core.errors import ConfigError
from rag.models.generators.base import (
    ChatMessage,
    FinishReason,
    Generation,
    GenerationError,
    Generator,
    LabelScorer,
    Role,
)
from rag.models.generators.local import LocalGenerator, load_local_generator
from rag.models.generators.openai_http import OpenAIChatGenerator, load_openai_generator

__all__ = [
    "ChatMessage",
    "FinishReason",
    "Generation",
    "GenerationError",
    "Generator",
    "LabelScorer",
    "LocalGenerator",
    "OpenAIChatGenerator",
    "Role",
    "backend_kind",
    "load_generator",
]

Backend = Literal["local", "llamacpp", "openai", "extractive"]


def load_generator(settings: GeneratorSettings, *, cache_dir: Path | None = None) -> Generator:
    """The configured backend. `cache_dir` holds converted models (default $CLINRAG_CACHE_DIR or ~/.cache/clinrag).

    kind "extractive" has no language model: the engine builds that answerer itself from the retrieved evidence.
    """
    kind = backend_kind(settings)
    if kind == "local":
        return load_local_generator(settings, cache_dir=cache_dir)
    if kind == "llamacpp":
        from rag.models.generators.llamacpp import load_llamacpp_generator

        return load_llamacpp_generator(settings, cache_dir=cache_dir)
    if kind == "openai":
        return load_openai_generator(settings)
    raise ConfigError(
        f"generator.kind = {settings.kind!r} needs no language model: build the engine's extractive answerer "
        "instead of calling load_generator, or set generator.kind to 'local', 'llamacpp' or 'openai'"
    )


def backend_kind(settings: GeneratorSettings) -> Backend:
    """The backend that runs `settings`; kind "auto" picks llama.cpp for a GGUF model, transformers otherwise.

    The packaged SmolLM2 runs on llama.cpp when llama-cpp-python is installed (ask ~1.7x faster on 2 cores,
    benchmarks/RESULTS.md) and on transformers when it is not, so a core install still answers. A .gguf path or a
    split-package alias always goes to llama.cpp, whose loader then says how to install it.
    """
    if settings.kind != "auto":
        return settings.kind
    from rag.models.generators.assemble import split_model
    from rag.models.generators.convert import packaged_gguf

    if settings.model.endswith(".gguf") or split_model(settings.model) is not None:
        return "llamacpp"
    if packaged_gguf(settings.model) is not None and importlib.util.find_spec("llama_cpp") is not None:
        return "llamacpp"
    return "local"
