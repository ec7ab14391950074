"""The settings object rejects unknown keys and bad values with the dotted path in the message."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.core.config import Settings, answer_template, load_settings, settings_from_mapping, with_overrides
from rag.core.errors import ConfigError


def test_defaults_are_valid() -> None:
    settings = Settings()
    assert settings.index.chunker.max_tokens == 256
    assert settings.index.embedder.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert settings.index.dense.kind == "flat"


def test_unknown_key_is_rejected_with_its_path() -> None:
    with pytest.raises(ConfigError, match=r"index\.chunker\.max_tokenz"):
        settings_from_mapping({"index": {"chunker": {"max_tokenz": 100}}})


def test_bad_value_is_rejected() -> None:
    with pytest.raises(ConfigError, match="overlap_tokens"):
        settings_from_mapping({"index": {"chunker": {"max_tokens": 64, "overlap_tokens": 40}}})
    with pytest.raises(ConfigError, match="kind"):
        settings_from_mapping({"index": {"dense": {"kind": "annoy"}}})


def test_files_and_overrides(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text("[index.chunker]\nmax_tokens = 128\n")
    settings = load_settings(toml)
    assert settings.index.chunker.max_tokens == 128
    assert with_overrides(settings, {"index.dense.kind": "hnsw"}).index.dense.kind == "hnsw"
    with pytest.raises(ConfigError, match="unknown setting"):
        with_overrides(settings, {"index.nope": 1})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json: not valid JSON"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml")


def test_readme_settings_example_is_valid() -> None:
    """The TOML example in the README is what users copy: it must load as it is."""
    import re
    import tomllib

    from rag.core.config import settings_from_mapping

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.DOTALL) if "[index.embedder]" in b]
    assert blocks, "README lost its settings example"
    settings = settings_from_mapping(tomllib.loads(blocks[0]), origin="README")
    assert settings.answer.min_evidence_score == 0.3 and settings.generator.kind == "auto"


def test_generator_adapter_default_applies_only_to_the_default_base(tmp_path: Path) -> None:
    from rag.core.config import DEFAULT_GENERATOR, PACKAGED_ADAPTER, GeneratorSettings

    shipped = (PACKAGED_ADAPTER / "adapter_config.json").is_file()
    assert GeneratorSettings().adapter_path() == (PACKAGED_ADAPTER if shipped else None)
    assert GeneratorSettings(adapter="default").adapter_path() == GeneratorSettings().adapter_path()
    assert GeneratorSettings(model=DEFAULT_GENERATOR, adapter="none").adapter_path() is None
    assert GeneratorSettings(adapter=None).adapter_path() is None
    # Another base model cannot take an adapter trained for SmolLM2: "default" means none there.
    assert GeneratorSettings(model="Qwen/Qwen2.5-0.5B-Instruct", adapter="default").adapter_path() is None
    assert GeneratorSettings(kind="extractive", adapter="default").adapter_path() is None
    assert GeneratorSettings(adapter=str(tmp_path)).adapter_path() == tmp_path


def test_generator_dtype_is_checked() -> None:
    from pydantic import ValidationError

    from rag.core.config import GeneratorSettings

    assert GeneratorSettings().dtype == "float32"
    assert GeneratorSettings(dtype="bfloat16").dtype == "bfloat16"
    with pytest.raises(ValidationError, match="quantize_int8 needs dtype"):
        GeneratorSettings(dtype="bfloat16", quantize_int8=True)
    with pytest.raises(ValidationError):
        GeneratorSettings(dtype="float16")  # type: ignore[arg-type]


def test_the_answer_template_follows_the_generator_unless_set() -> None:
    def chosen(**overrides: object) -> str:
        settings = with_overrides(Settings(), overrides)
        return answer_template(settings.answer, settings.generator)

    assert chosen() == "answer"  # the packaged model's adapter learnt this prompt
    assert chosen(**{"answer.shots": 2}) == "answer-few-shot"
    assert chosen(**{"generator.kind": "extractive"}) == "answer"
    assert chosen(**{"generator.kind": "llamacpp", "generator.model": "qwen-coder-1.5b"}) == "answer-select"
    assert chosen(**{"generator.adapter": "none"}) == "answer-select"  # the bare base model
    endpoint = {"generator.kind": "openai", "generator.base_url": "http://localhost:8000/v1", "generator.model": "m"}
    assert chosen(**endpoint) == "answer-select"
    assert chosen(**endpoint, **{"answer.template": "answer"}) == "answer"  # a set template always wins
    assert chosen(**endpoint, **{"answer.template": "answer", "answer.shots": 1}) == "answer-few-shot"
