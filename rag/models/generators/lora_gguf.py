"""A peft LoRA adapter (the project's fine-tuned generator) as a llama.cpp LoRA GGUF file, so llama.cpp can run it.

    path = ensure_lora_gguf(adapter_dir, base_gguf, cache_dir)   # converted once, cached by content hash

llama.cpp reads an adapter as pairs of tensors per adapted weight, `<gguf weight name>.lora_a` (rank x in) and
`.lora_b` (out x rank), with `adapter.lora.alpha`; it scales them by alpha / rank, as peft does. Two details make
or break it, both taken from llama.cpp's own converters: names are mapped from Hugging Face modules to GGUF
tensors (`model.layers.3.self_attn.q_proj` -> `blk.3.attn_q.weight`), and for the llama architecture the rows of
the query and key projections are permuted (rotary layout), so `lora_b` of those two is permuted the same way.
Only plain LoRA (no DoRA, rsLoRA, bias or per-module ranks) is converted; anything else is a clear error.

For a small base the adapter is merged instead (`ensure_adapted_gguf`): llama.cpp re-writes the base as 16-bit
(BF16 by default, `generator.merged_weights`; or F16) and `W + alpha/r * B @ A` is added to each adapted tensor in
place. On 2 cores this reads prompts about twice as fast as Q4_1 with the adapter applied at run time (Q4_1 is not
repacked for AVX-512 and the run-time LoRA adds two matrix products per weight), and it stays close to the
transformers backend, which runs the same dequantised weights. Large bases keep the run-time adapter: their
16-bit copy would cost gigabytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from rag.core.errors import ModelLoadError
from rag.core.files import file_sha256

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
MERGE_LIMIT_BYTES = 1 << 30  # merge when the base's F16 copy stays under 1 GiB (SmolLM2-135M: 259 MiB)
MergedType = Literal["f16", "bf16"]


def ensure_adapted_gguf(
    adapter: Path, base_gguf: Path, cache_dir: Path, *, merged_type: MergedType = "f16"
) -> tuple[Path, Path | None]:
    """(model file, run-time LoRA file or None): the adapter merged into a 16-bit copy of a small base, else LoRA."""
    if _f16_bytes(base_gguf) <= MERGE_LIMIT_BYTES:
        return ensure_merged_gguf(adapter, base_gguf, cache_dir, merged_type=merged_type), None
    return base_gguf, ensure_lora_gguf(adapter, base_gguf, cache_dir)


def ensure_lora_gguf(adapter: Path, base_gguf: Path, cache_dir: Path) -> Path:
    """The adapter as LoRA GGUF in `cache_dir/models/lora`, converted on first use (keyed by both files' content)."""
    target = cache_dir / "models" / "lora" / f"{adapter.resolve().name}-{_cache_key(adapter, base_gguf)}.gguf"
    return _cached(target, lambda partial: convert_lora(adapter, base_gguf, partial))


def ensure_merged_gguf(adapter: Path, base_gguf: Path, cache_dir: Path, *, merged_type: MergedType = "f16") -> Path:
    """The base with the adapter merged, F16 or BF16, in `cache_dir/models/merged`, written on first use."""
    name = f"{base_gguf.stem}+{adapter.resolve().name}-{_cache_key(adapter, base_gguf)}.{merged_type}.gguf"
    return _cached(
        cache_dir / "models" / "merged" / name,
        lambda partial: merge_lora(adapter, base_gguf, partial, merged_type=merged_type),
    )


def merge_lora(adapter: Path, base_gguf: Path, out: Path, *, merged_type: MergedType = "f16") -> Path:
    """A 16-bit copy of `base_gguf` (llama.cpp's own re-quantiser) with `alpha/r * B @ A` added to adapted weights.

    16-bit, not a 4-bit re-quantisation: merged then re-quantised to Q4_0, SmolLM2 answered 1.2x faster but changed
    32% of PubMedQA decisions and fell back to the extractive answer on 15 of 20 demo questions (F16: 7). The
    update is added in float32 and rounded once to the file's type (BF16: to nearest even, as ggml does).
    """
    import gguf

    config, _, pairs = _adapter_for(adapter, base_gguf)
    _requantise_16bit(base_gguf, out, merged_type)
    wanted = gguf.GGMLQuantizationType.BF16 if merged_type == "bf16" else gguf.GGMLQuantizationType.F16
    scale = float(config["lora_alpha"]) / float(config["r"])
    reader = gguf.GGUFReader(str(out), "r+")
    tensors = {t.name: t for t in reader.tensors}
    for name, a, b in pairs:
        tensor = tensors[name]
        if tensor.tensor_type != wanted:
            raise ModelLoadError(f"{base_gguf}: llama.cpp left {name} as {tensor.tensor_type.name}, not {wanted.name}; "
                                 "merge the adapter with the transformers backend instead")  # fmt: skip
        delta = scale * (b.astype(np.float32) @ a.astype(np.float32))
        tensor.data[...] = _plus_delta(tensor.data, delta, merged_type)
    reader.data.flush()
    del tensors, reader  # release the writable memory map before the file is renamed
    return out


def _plus_delta(data: npt.NDArray[Any], delta: npt.NDArray[np.float32], merged_type: MergedType) -> npt.NDArray[Any]:
    """`data + delta` in the tensor's own storage: float16 values, or BF16 as raw bytes (numpy has no bfloat16)."""
    if merged_type == "f16":
        return (data.astype(np.float32) + delta).astype(np.float16)
    from gguf.quants import BF16

    weights = _bf16_values(data) + delta
    return BF16.quantize_blocks(np.ascontiguousarray(weights, dtype=np.float32)).reshape(data.shape)


def load_merged_values(tensor: Any) -> npt.NDArray[np.float32]:
    """A 16-bit GGUF tensor's values as float32 (F16 or BF16), for checks and tests."""
    import gguf

    if tensor.tensor_type == gguf.GGMLQuantizationType.BF16:
        return _bf16_values(tensor.data)
    return np.asarray(tensor.data, dtype=np.float32)


def _bf16_values(raw: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """BF16 tensor bytes (two per value along the last axis, as GGUFReader maps them) as float32 values."""
    from gguf.quants import BF16

    rows = np.ascontiguousarray(raw)
    return np.asarray(BF16.dequantize_blocks(rows), dtype=np.float32).reshape(*rows.shape[:-1], -1)


def _requantise_16bit(base_gguf: Path, out: Path, merged_type: MergedType) -> None:
    import ctypes

    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_BF16 if merged_type == "bf16" else llama_cpp.LLAMA_FTYPE_MOSTLY_F16
    params.allow_requantize = True
    params.nthread = max(1, len(os.sched_getaffinity(0)))
    with suppress_stdout_stderr(disable=False):  # llama.cpp prints a line per tensor
        failed = llama_cpp.llama_model_quantize(str(base_gguf).encode(), str(out).encode(), ctypes.byref(params))
    if failed:
        raise ModelLoadError(f"{base_gguf}: llama.cpp could not re-write it as {merged_type.upper()} (code {failed}); "
                             "it may be damaged: reinstall the package that ships it")  # fmt: skip


def _f16_bytes(base_gguf: Path) -> int:
    import gguf

    reader = gguf.GGUFReader(str(base_gguf))
    return 2 * sum(int(t.n_elements) for t in reader.tensors)


def _cache_key(adapter: Path, base_gguf: Path) -> str:
    config, weights = _adapter_files(adapter)
    text = f"{CONVERTER_VERSION}:{file_sha256(weights)}:{config.read_text(encoding='utf-8')}:{base_gguf.stat().st_size}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cached(target: Path, write: Callable[[Path], Path]) -> Path:
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        write(partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    return target


def convert_lora(adapter: Path, base_gguf: Path, out: Path) -> Path:
    import gguf

    config, arch, pairs = _adapter_for(adapter, base_gguf)
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
    for name, a, b in pairs:
        writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a, dtype=np.float32))
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _adapter_for(adapter: Path, base_gguf: Path) -> tuple[dict[str, Any], str, list[tuple[str, Any, Any]]]:
    """The adapter's config, the base's architecture, and (GGUF weight name, A, B) per adapted weight, checked
    against the base and with B's rows in the base's order (q/k permuted for rotary layouts)."""
    from safetensors.numpy import load_file

    config_path, weights_path = _adapter_files(adapter)
    config = json.loads(config_path.read_text(encoding="utf-8"))
    _check_plain_lora(config, adapter)
    arch, heads, kv_heads = _base_facts(base_gguf)
    pairs = _pairs(load_file(str(weights_path)), adapter)
    _check_shapes(pairs, adapter, base_gguf)
    out = []
    for name, a, b in pairs:
        if arch in _ROTARY_PERMUTED and name.endswith((".attn_q.weight", ".attn_k.weight")):
            b = permute_rows(b, heads if ".attn_q." in name else kv_heads)
        out.append((name, a, b))
    return config, arch, out


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


def _check_shapes(pairs: list[tuple[str, Any, Any]], adapter: Path, base_gguf: Path) -> None:
    """Each update B @ A must have its base weight's shape (out x in); else the adapter belongs to another model."""
    import gguf

    shapes = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in gguf.GGUFReader(str(base_gguf)).tensors}
    for name, a, b in pairs:
        update = (int(b.shape[0]), int(a.shape[1]))
        if shapes.get(name) != update or a.shape[0] != b.shape[1]:
            raise ModelLoadError(
                f"{adapter}: its update for {name} is {update[0]} x {update[1]} but {base_gguf} has "
                f"{shapes.get(name, 'no such weight')}; the adapter was trained for another model"
            )


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
