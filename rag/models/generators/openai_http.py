"""A client for OpenAI-compatible `/chat/completions` endpoints (vLLM, Ollama, llama.cpp server, hosted APIs).

Standard library only. The API key is read from the environment variable named in the settings, sent as a
Bearer token and never written to a message, a log or a repr; without the variable no header is sent, as local
servers usually need none.
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rag.core.config import GeneratorSettings
from rag.core.errors import ConfigError
from rag.models.generators.base import (
    ChatMessage,
    FinishReason,
    Generation,
    GenerationError,
    check_request,
    cut_at_stop,
)

DEFAULT_CONTEXT_WINDOW = 8192
_RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_MAX_BACKOFF_S = 30.0
_EXCERPT_CHARS = 300


@dataclass(frozen=True, slots=True)
class _Reply:
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


class _Retryable(Exception):
    """A failure worth another try (rate limit, server error, lost connection, timeout)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIChatGenerator:
    """Chat completions over HTTP. `token_counter` replaces the chars/4 estimate when the tokenizer is known."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        retries: int = 2,
        context_window: int | None = None,
        token_counter: Callable[[str], int] | None = None,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._url = _chat_url(base_url)
        self._model = model
        self._api_key_env = api_key_env
        self._timeout_s = timeout_s
        self._retries = retries
        self._context_window = context_window or DEFAULT_CONTEXT_WINDOW
        self._token_counter = token_counter
        self._backoff_s = backoff_s
        self._sleep = sleep

    def __repr__(self) -> str:  # never shows the key: only where it comes from
        return f"OpenAIChatGenerator(url={self._url!r}, model={self._model!r}, api_key_env={self._api_key_env!r})"

    @property
    def name(self) -> str:
        return self._model

    @property
    def url(self) -> str:
        return self._url

    @property
    def context_window(self) -> int:
        return self._context_window

    def count_tokens(self, text: str) -> int:
        if self._token_counter is not None:
            return self._token_counter(text)
        return math.ceil(len(text) / 4)  # ~4 characters per token for English text with BPE tokenizers

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> Generation:
        check_request(messages, max_new_tokens, temperature)
        payload: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": max_new_tokens,
            "temperature": temperature,
        }
        if stop:
            payload["stop"] = [s for s in stop if s]
        started = time.perf_counter()
        reply = self._post_with_retries(json.dumps(payload).encode("utf-8"))
        # Servers differ in whether they strip the stop string: cut again so every backend behaves the same.
        text, stopped = cut_at_stop(reply.text, stop)
        # Servers that report no usage get the same estimate count_tokens gives.
        prompt_tokens = reply.prompt_tokens
        if prompt_tokens is None:
            prompt_tokens = sum(self.count_tokens(m.content) for m in messages)
        new_tokens = reply.completion_tokens if reply.completion_tokens is not None else self.count_tokens(reply.text)
        return Generation(
            text=text,
            prompt_tokens=prompt_tokens,
            new_tokens=new_tokens,
            seconds=time.perf_counter() - started,
            finish_reason=_finish_reason(reply.finish_reason, stopped),
            model=self._model,
        )

    def _post_with_retries(self, body: bytes) -> _Reply:
        for attempt in range(self._retries + 1):
            try:
                return self._post(body)
            except _Retryable as exc:
                if attempt == self._retries:
                    raise GenerationError(
                        f"{self._url}: {exc} (gave up after {attempt + 1} attempt(s)); check that the server is "
                        "running and reachable, or raise generator.retries / generator.timeout_s"
                    ) from exc
                self._sleep(self._delay(attempt, exc.retry_after))
        raise AssertionError("unreachable: the loop returns or raises")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), _MAX_BACKOFF_S)
        return min(self._backoff_s * 2.0**attempt, _MAX_BACKOFF_S)

    def _post(self, body: bytes) -> _Reply:
        request = urllib.request.Request(self._url, data=body, headers=self._headers(), method="POST")
        try:
            # The scheme is checked to be http(s) in _chat_url, so no file:// or other opener can be reached.
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            self._raise_http_error(exc)
        except TimeoutError as exc:
            raise _Retryable(f"no answer within {self._timeout_s:g} s") from exc
        except (urllib.error.URLError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise _Retryable(f"no answer within {self._timeout_s:g} s") from exc
            raise _Retryable(f"cannot connect ({reason})") from exc
        return _parse_reply(raw, self._url)

    def _raise_http_error(self, exc: urllib.error.HTTPError) -> None:
        excerpt = self._redact(_read_excerpt(exc))
        if exc.code in _RETRY_STATUSES:
            raise _Retryable(f"HTTP {exc.code}: {excerpt}", _retry_after(exc.headers.get("Retry-After"))) from exc
        hint = {
            401: f"check the API key in the environment variable {self._api_key_env}",
            403: f"check the API key in the environment variable {self._api_key_env} and its permissions",
            404: "check generator.base_url (it usually ends in /v1) and generator.model",
        }.get(exc.code, "check generator.model and the request limits of the server")
        raise GenerationError(f"{self._url}: HTTP {exc.code}: {excerpt}; {hint}") from exc

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self._api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _redact(self, text: str) -> str:
        # Some servers echo the request headers in their error bodies.
        key = os.environ.get(self._api_key_env)
        return text.replace(key, "***") if key else text


def load_openai_generator(settings: GeneratorSettings) -> OpenAIChatGenerator:
    if not settings.base_url:
        raise ConfigError("generator.kind = 'openai' needs generator.base_url, e.g. http://localhost:8000/v1")
    return OpenAIChatGenerator(
        settings.base_url,
        settings.model,
        api_key_env=settings.api_key_env,
        timeout_s=settings.timeout_s,
        retries=settings.retries,
        context_window=settings.context_window,
    )


def _chat_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"generator.base_url {base_url!r} is not an http(s) URL; use e.g. http://localhost:8000/v1")
    root = base_url.rstrip("/")
    return root if root.endswith("/chat/completions") else f"{root}/chat/completions"


def _parse_reply(raw: bytes, url: str) -> _Reply:
    try:
        data = json.loads(raw)
        choice = data["choices"][0]
        text = choice["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        excerpt = raw[:_EXCERPT_CHARS].decode("utf-8", "replace")
        raise GenerationError(
            f"{url}: the answer is not an OpenAI chat completion ({type(exc).__name__}: {exc}; body: {excerpt!r}); "
            "check that generator.base_url points at an OpenAI-compatible /v1 endpoint"
        ) from exc
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return _Reply(
        text=str(text),
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
        completion_tokens=_int_or_none(usage.get("completion_tokens")),
    )


def _finish_reason(reported: str | None, stopped: bool) -> FinishReason:
    if stopped:
        return "stop"
    return "length" if reported == "length" else "stop"


def _read_excerpt(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read()[:_EXCERPT_CHARS].decode("utf-8", "replace")
    except OSError:
        body = ""
    return " ".join(body.split()) or str(exc.reason)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to exponential backoff


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
