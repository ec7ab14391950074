"""Joining a Ray cluster for a sharded build or search (pip install 'clinrag[ray]').

ADDRESS is what `ray.init` takes: "auto" (the cluster this machine belongs to), "HOST:PORT" of a head node, or
"ray://HOST:10001" (Ray Client). "local" starts a private cluster inside this process with every CPU of this
machine, "local:N" with N worker CPUs; it stops when the process ends.
"""

from __future__ import annotations

import os
import re
from typing import Any

from rag.core.errors import ConfigError

_LOCAL = re.compile(r"^local(?::(\d+))?$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RAISED = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt): (?P<message>.+)$")


def ray_module() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "--ray needs Ray: pip install 'clinrag[ray]' (or leave --ray out to run in this process)"
        ) from exc
    return ray


def connect(address: str) -> Any:
    """The `ray` module, initialised for `address` (an already initialised Ray is reused as it is)."""
    ray = ray_module()
    if ray.is_initialized():
        return ray
    local = _LOCAL.match(address.strip())
    # Workers import clinrag from the driver's environment; logs stay in Ray's session folder, not the terminal.
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if local is not None:
            cpus = int(local.group(1)) if local.group(1) else len(os.sched_getaffinity(0))
            if cpus < 1:
                raise ConfigError(f"--ray {address}: a local cluster needs at least 1 CPU")
            ray.init(num_cpus=cpus, **options)
        else:
            ray.init(address=address, **options)
    except ConfigError:
        raise
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError or its own errors for a bad address
        raise ConfigError(
            f"--ray {address}: cannot join the Ray cluster ({type(exc).__name__}: {exc}); start one with "
            "`ray start --head`, give its address (HOST:6379 or ray://HOST:10001), or use --ray local"
        ) from exc
    return ray


def worker_cpus(ray: Any) -> int:
    """CPUs the cluster offers to tasks (one shard task or loader per CPU)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def cause(exc: BaseException) -> str:
    """The worker's own error message inside a Ray error, so messages name the real problem, not Ray's wrapper.

    A failed task carries the worker's exception (`cause`); an actor whose constructor raised (ActorDiedError)
    carries only a formatted traceback, whose last line is the worker's `Type: message`.
    """
    inner = getattr(exc, "cause", None)
    if isinstance(inner, BaseException):
        return str(inner)
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    for line in reversed(lines):
        raised = _RAISED.match(line)
        if raised:
            return raised.group("message")
    return lines[0] if lines else type(exc).__name__
