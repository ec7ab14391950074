"""Generator backends behind one protocol: a local Hugging Face model, a GGUF on llama.cpp, an OpenAI-compatible
endpoint, a fake.

    from rag.generators import ChatMessage, load_generator
    generator = load_generator(settings.generator)
    reply = generator.generate([ChatMessage("user", "...")], max_new_tokens=128)

Importing this package loads no model and imports neither torch, transformers nor llama_cpp.
"""

from __future__ import annotations

from pathlib import Path

from rag.config import GeneratorSettings
from rag.errors import ConfigError
from rag.generators.base import (
    ChatMessage,
    FinishReason,
    Generation,
    GenerationError,
    Generator,
    LabelScorer,
    Role,
)
from rag.generators.fake import ScriptedCall, ScriptedGenerator
from rag.generators.local import LocalGenerator, load_local_generator
from rag.generators.openai_http import OpenAIChatGenerator, load_openai_generator

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
    "ScriptedCall",
    "ScriptedGenerator",
    "load_generator",
]


def load_generator(settings: GeneratorSettings, *, cache_dir: Path | None = None) -> Generator:
    """The configured backend. `cache_dir` holds converted models (default $CLINRAG_CACHE_DIR or ~/.cache/clinrag).

    kind "extractive" has no language model: the engine builds that answerer itself from the retrieved evidence.
    """
    if settings.kind == "local":
        return load_local_generator(settings, cache_dir=cache_dir)
    if settings.kind == "llamacpp":
        from rag.generators.llamacpp import load_llamacpp_generator

        return load_llamacpp_generator(settings, cache_dir=cache_dir)
    if settings.kind == "openai":
        return load_openai_generator(settings)
    raise ConfigError(
        f"generator.kind = {settings.kind!r} needs no language model: build the engine's extractive answerer "
        "instead of calling load_generator, or set generator.kind to 'local', 'llamacpp' or 'openai'"
    )
