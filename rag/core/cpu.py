"""What this CPU can do, read from Linux's /proc/cpuinfo (empty elsewhere): for training cards and dtype choices."""

from __future__ import annotations

import re
from pathlib import Path

_FLAG_LINES = ("flags", "Features")  # x86, Arm


def read_cpuinfo() -> str | None:
    """/proc/cpuinfo's text, or None where it cannot be read (not Linux, a sandbox)."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of every `flags` (x86) or `Features` (Arm) line."""
    lines = (line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    return {flag for key, value in lines if key.strip() in _FLAG_LINES for flag in re.findall(r"[a-z0-9_]+", value)}


def native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes in bfloat16 natively (x86 AVX512-BF16 or AMX; Arm's bf16); False where that cannot
    be read. Elsewhere bfloat16 is emulated and slower than float32."""
    info = read_cpuinfo() if cpuinfo is None else cpuinfo
    return bool(info and cpu_flags(info) & {"avx512_bf16", "amx_bf16", "bf16"})
