"""A peft LoRA adapter (the project's fine-tuned generator) as a llama.cpp LoRA GGUF file, so llama.cpp can run it.

    path = ensure_lora_gguf(adapter_dir, base_gguf, cache_dir)   # converted once, cached by content hash

llama.cpp reads an adapter as pairs of tensors per adapted weight, `<gguf weight name>.lora_a` (rank x in) and
`.lora_b` (out x rank), with `adapter.lora.alpha`; it scales them by alpha / rank, as peft does. Two details make
or break it, both taken from llama.cpp's own converters: names are mapped from Hugging Face modules to GGUF
tensors (`model.layers.3.self_attn.q_proj` -> `blk.3.attn_q.weight`), and for the llama architecture the rows of
the query and key projections are permuted (rotary layout), so `lora_b` of those two is permuted the same way.
Only plain LoRA (no DoRA, rsLoRA, bias or per-module ranks) is converted; anything else is a clear error.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rag.errors import ModelLoadError
from rag.store import file_sha256

_MODULES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_KEY = re.compile(r"(?:^|\.)layers\.(?P<layer>\d+)\.(?P<module>[a-z_]+\.[a-z_]+)\.lora_(?P<ab>[AB])\.weight$")
_ROTARY_PERMUTED = {"llama"}  # architectures whose q/k rows llama.cpp's converter permutes
CONVERTER_VERSION = "1"


def ensure_lora_gguf(adapter: Path, base_gguf: Path, cache_dir: Path) -> Path:
    """The adapter as LoRA GGUF in `cache_dir/models/lora`, converted on first use (keyed by both files' content)."""
    config, weights = _adapter_files(adapter)
    key = hashlib.sha256(
        f"{CONVERTER_VERSION}:{file_sha256(weights)}:{config.read_text(encoding='utf-8')}:{base_gguf.stat().st_size}".encode()
    ).hexdigest()[:16]
    target = cache_dir / "models" / "lora" / f"{adapter.resolve().name}-{key}.gguf"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    convert_lora(adapter, base_gguf, partial)
    os.replace(partial, target)
    return target


def convert_lora(adapter: Path, base_gguf: Path, out: Path) -> Path:
    import gguf
    from safetensors.numpy import load_file

    config_path, weights_path = _adapter_files(adapter)
    config = json.loads(config_path.read_text(encoding="utf-8"))
    _check_plain_lora(config, adapter)
    arch, heads, kv_heads = _base_facts(base_gguf)
    tensors = load_file(str(weights_path))
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
    for name, a, b in _pairs(tensors, adapter):
        if arch in _ROTARY_PERMUTED and name.endswith((".attn_q.weight", ".attn_k.weight")):
            b = permute_rows(b, heads if ".attn_q." in name else kv_heads)
        writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a, dtype=np.float32))
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def permute_rows(weights: npt.NDArray[Any], heads: int) -> npt.NDArray[Any]:
    """llama.cpp's rotary re-ordering of a projection's output rows (its convert_hf_to_gguf `permute`)."""
    rows = weights.shape[0]
    return weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _pairs(tensors: dict[str, npt.NDArray[Any]], adapter: Path) -> list[tuple[str, Any, Any]]:
    found: dict[tuple[int, str], dict[str, Any]] = {}
    for key, value in tensors.items():
        match = _KEY.search(key)
        if match is None or match["module"] not in _MODULES:
            raise ModelLoadError(
                f"{adapter}: tensor {key!r} is not a LoRA matrix of a known projection ({', '.join(_MODULES)}); "
                "only attention and feed-forward projections convert to llama.cpp"
            )
        found.setdefault((int(match["layer"]), match["module"]), {})[match["ab"]] = value
    out = []
    for (layer, module), pair in sorted(found.items()):
        if set(pair) != {"A", "B"}:
            raise ModelLoadError(f"{adapter}: layer {layer} {module} lacks lora_A or lora_B; the adapter is damaged")
        out.append((f"blk.{layer}.{_MODULES[module]}.weight", pair["A"], pair["B"]))
    return out


def _check_plain_lora(config: dict[str, Any], adapter: Path) -> None:
    unsupported = [k for k in ("use_dora", "use_rslora") if config.get(k)]
    if config.get("bias", "none") != "none":
        unsupported.append("bias")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        unsupported.append("rank_pattern/alpha_pattern")
    if unsupported:
        raise ModelLoadError(
            f"{adapter}: {', '.join(unsupported)} cannot be converted to a llama.cpp LoRA; use the transformers "
            "backend (generator.kind = 'local') for this adapter"
        )


def _base_facts(base_gguf: Path) -> tuple[str, int, int]:
    import gguf

    try:
        reader = gguf.GGUFReader(str(base_gguf))
        arch = _field(reader, "general.architecture")
        heads = int(_field(reader, f"{arch}.attention.head_count"))
        kv_heads = int(_field(reader, f"{arch}.attention.head_count_kv", str(heads)))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{base_gguf}: cannot read the base model's GGUF header ({exc})") from exc
    return arch, heads, kv_heads


def _field(reader: Any, key: str, default: str | None = None) -> str:
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            raise KeyError(key)
        return default
    value = field.parts[field.data[0]]
    return bytes(value).decode("utf-8") if value.dtype == np.uint8 else str(value[0])


def _adapter_files(adapter: Path) -> tuple[Path, Path]:
    config, weights = adapter / "adapter_config.json", adapter / "adapter_model.safetensors"
    if not config.is_file() or not weights.is_file():
        raise ModelLoadError(
            f"{adapter}: a LoRA adapter folder needs adapter_config.json and adapter_model.safetensors (written by "
            "the fine-tuning run); point generator.adapter at such a folder or set it to 'none'"
        )
    return config, weights
