"""The OpenAI-compatible backend against a real server: `python -m llama_cpp.server` on loopback serving the
packaged SmolLM2 with the packaged adapter merged in (the same weights `generator.kind = "llamacpp"` runs), then
`bench_ask.py --generator openai` over the 20 demo questions.

    python benchmarks/bench_endpoint.py [--threads 2] [--evidence-k K --max-prompt-tokens N] [--json out.json]

Needs the `llamacpp` extra (llama-cpp-python[server]). The server gets the cores; the engine's embedder,
reranker and support checker run in this process beside it, as they would with a server on the same machine.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def served_model() -> Path:
    from rag.core.config import DEFAULT_GENERATOR, PACKAGED_ADAPTER, GeneratorSettings, IndexSettings, default_cache_dir
    from rag.models.generators.llamacpp import resolve_gguf
    from rag.models.generators.lora_gguf import ensure_merged_gguf

    cache = default_cache_dir(IndexSettings())
    base, _ = resolve_gguf(DEFAULT_GENERATOR, cache)
    return ensure_merged_gguf(PACKAGED_ADAPTER, base, cache, merged_type=GeneratorSettings().merged_weights)


def wait_for(base_url: str, process: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"{base_url}/models", timeout=2).read()
            return
        except OSError:
            if process.poll() is not None:
                code = process.returncode
                raise SystemExit(f"llama_cpp.server exited with {code}; is the llamacpp extra installed?") from None
            if time.monotonic() > deadline:
                raise SystemExit(f"llama_cpp.server did not answer within {timeout_s:.0f} s") from None
            time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--evidence-k", type=int)
    parser.add_argument("--max-prompt-tokens", type=int)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    server = [sys.executable, "-m", "llama_cpp.server", "--model", str(served_model()), "--host", "127.0.0.1",
              "--port", str(port), "--n_ctx", "4096", "--n_threads", str(args.threads), "--n_threads_batch",
              str(args.threads), "--model_alias", "smollm2-clinrag"]  # fmt: skip
    process = subprocess.Popen(server, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(base_url, process)
        bench = [sys.executable, str(ROOT / "benchmarks" / "bench_ask.py"), "--generator", "openai",
                 "--base-url", base_url, "--model", "smollm2-clinrag", "--threads", str(args.threads)]  # fmt: skip
        for flag, value in (("--evidence-k", args.evidence_k), ("--max-prompt-tokens", args.max_prompt_tokens),
                            ("--json", args.json)):  # fmt: skip
            if value is not None:
                bench += [flag, str(value)]
        return subprocess.call(bench)
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
