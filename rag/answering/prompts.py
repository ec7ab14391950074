"""Prompt templates from `prompts/`: sandboxed Jinja2, declared variables, evidence fitted to a token budget.

A template is registered in `prompts/templates.toml` with a version and the variables it uses; loading checks
the files against that declaration, so a typo in a template fails at load time and not in the middle of an
evaluation. Document text reaches the model only as escaped data inside `<evidence>` blocks: it cannot close
the block, pose as an evidence key or as the answer format.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.answering.citations import CITATION_KEYS
from rag.core.errors import ConfigError
from rag.core.types import Evidence
from rag.models.generators.base import ChatMessage
from rag.text.units import evidence_lines, evidence_units

DEFAULT_PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"
REGISTRY = "templates.toml"

# What document text must not be able to imitate: the block delimiters, evidence keys, chat special tokens and
# the answer format's own markers.
# `(?:/\s*)?` rather than `/?\s*`: two adjacent optional whitespace runs made "<" + 20,000 spaces take 2 s.
# No `\b` after "evidence": "<evidenceX" reads as the delimiter to a model as much as "<evidence" does.
_TAG = re.compile(r"<\s*(?:/\s*)?evidence[^>]*>?", re.IGNORECASE)
_SPECIAL = re.compile(r"<\|[^|>]{0,40}\|>")
_MARKERS = re.compile(r"(SUGGESTIONS\s*:|INSUFFICIENT\s+EVIDENCE)", re.IGNORECASE)  # glued to a word too
# A sentence key as the `answer-select` template numbers the evidence ("[E1.3]"): a document writing one could
# pass its own line off as a numbered sentence of another passage.
_SENTENCE_KEY = re.compile(r"\[\s*(E\s*\d+\s*\.\s*\d+)\s*\]", re.IGNORECASE)
REPLY_FORMATS = ("suggestions", "sentence-keys")


@dataclass(frozen=True)
class EvidenceItem:
    """One passage as the prompt shows it, under its key (E1, E2, ...)."""

    key: str
    title: str
    source: str
    year: str
    type: str
    text: str
    evidence: Evidence | None = field(default=None, compare=False, repr=False)

    @property
    def shown(self) -> str:
        """Heading and text as the evidence block shows them (`{{ item.title }}: {{ item.text }}`)."""
        return f"{self.title}: {self.text}"

    def sentences(self) -> list[tuple[str, str]]:
        """The passage's quotable units (`rag.text.units`) under their keys: E1.1, E1.2, ..."""
        return [(line["key"], line["text"]) for line in self.numbered_lines() if line["key"]]

    def for_template(self, numbered: bool = False) -> dict[str, Any]:
        """The template's view; `numbered` adds `lines` (`numbered_lines`) for templates that show them."""
        shown: dict[str, Any] = {
            "key": self.key,
            "title": self.title,
            "source": self.source,
            "year": self.year,
            "type": self.type,
            "text": self.text,
        }
        if numbered:
            shown["lines"] = self.numbered_lines()
        return shown

    def numbered_lines(self) -> list[dict[str, str]]:
        """The passage line by line, each quotable unit under its key (as `sentences`), context lines under none."""
        lines, number = [], 0
        for text, quotable in evidence_lines(self.text):
            number += quotable
            lines.append({"key": f"{self.key}.{number}" if quotable else "", "text": text})
        return lines


@dataclass(frozen=True)
class Example:
    """A worked example for few-shot prompts: its own evidence, question and model answer."""

    question: str
    evidence: tuple[EvidenceItem, ...]
    answer: str


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: int
    description: str
    system: str
    user: str
    variables: frozenset[str]
    examples: tuple[Example, ...]
    folder: Path
    # "suggestions": the model writes cited suggestions; "sentence-keys": it names numbered evidence sentences
    # (E1.3) and the engine quotes them (rag.answering.selection).
    reply: str = "suggestions"
    max_new_tokens: int | None = None  # a cap on the reply below generator.max_new_tokens (a list of keys is short)

    @property
    def numbered(self) -> bool:
        """The evidence is shown sentence by sentence under keys (E1.1, E1.2, ...)."""
        return self.reply == "sentence-keys"

    def reply_tokens(self, limit: int) -> int:
        """New tokens a reply to this template may take: `limit`, or the template's own cap when lower."""
        return min(limit, self.max_new_tokens or limit)

    @property
    def label(self) -> str:
        return f"{self.name}@v{self.version}"


@dataclass(frozen=True)
class RenderedPrompt:
    messages: tuple[ChatMessage, ...]
    template: str
    evidence: tuple[EvidenceItem, ...]  # in the order shown, keys E1..En in that order
    prompt_tokens: int
    dropped_evidence: int  # passages left out because the budget was spent

    @property
    def sha256(self) -> str:
        payload = json.dumps([[m.role, m.content] for m in self.messages], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()


def escape_document_text(text: str) -> str:
    """Neutralise what in a document could pass for prompt structure; clinical text stays readable.

    Special tokens go first, and any "<|" or "|>" left after them is broken up, so that removing one cannot
    join the text around it into a tag or a key ("[E<|x|>99]" would become "[E 99]"). Keys are matched by the
    citation parser's own pattern, so that no form it reads ("[E1, E99]", "[e 99]") survives.
    """
    text = _SPECIAL.sub(" ", text).replace("<|", "‹|").replace("|>", "|›")
    text = _TAG.sub(lambda m: m.group(0).replace("<", "‹").replace(">", "›"), text)
    text = CITATION_KEYS.sub(lambda m: f"({m.group(1)})", text)
    text = _SENTENCE_KEY.sub(lambda m: f"({m.group(1)})", text)
    return _MARKERS.sub(lambda m: m.group(0).lower(), text)


def _escape_attribute(value: str) -> str:
    return value.replace('"', "'").replace("<", "‹").replace(">", "›").replace("\n", " ")


def evidence_item(key: str, evidence: Evidence, text: str | None = None) -> EvidenceItem:
    meta = evidence.meta
    return EvidenceItem(
        key=key,
        title=_escape_attribute(escape_document_text(meta.title or evidence.chunk.breadcrumb or "untitled")),
        source=_escape_attribute(escape_document_text(meta.source or "unknown")),  # the document's own issuer
        year=str(meta.year) if meta.year else "n.d.",
        type=meta.doc_type,
        text=escape_document_text(evidence.chunk.text if text is None else text),
        evidence=evidence,
    )


def load_template(name: str, prompts_dir: str | Path | None = None) -> PromptTemplate:
    """Load and check a registered template; errors name the file and what to fix."""
    folder = Path(prompts_dir) if prompts_dir else DEFAULT_PROMPTS_DIR
    registry = folder / REGISTRY
    try:
        entries = tomllib.loads(registry.read_text(encoding="utf-8")).get("templates", {})
    except OSError as exc:
        raise ConfigError(
            f"{registry}: cannot read the prompt registry ({exc.strerror}); set answer.prompts_dir to a folder "
            "holding templates.toml"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{registry}: not valid TOML: {exc}") from exc
    entry = entries.get(name)
    if not isinstance(entry, dict):
        raise ConfigError(f"{registry}: no template named {name!r}; known: {', '.join(sorted(entries)) or 'none'}")
    try:
        declared = frozenset(str(v) for v in entry["variables"])
        template = PromptTemplate(
            name=name,
            version=int(entry["version"]),
            description=str(entry.get("description", "")),
            system=str(entry["system"]),
            user=str(entry["user"]),
            variables=declared,
            examples=_load_examples(folder / entry["examples"]) if entry.get("examples") else (),
            folder=folder,
            reply=str(entry.get("reply", "suggestions")),
            max_new_tokens=int(entry["max_new_tokens"]) if "max_new_tokens" in entry else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"{registry}: template {name!r} needs version, system, user and variables ({type(exc).__name__}: {exc})"
        ) from exc
    if template.reply not in REPLY_FORMATS:
        raise ConfigError(f"{registry}: template {name!r} has reply = {template.reply!r}; use one of {REPLY_FORMATS}")
    if template.max_new_tokens is not None and template.max_new_tokens < 1:
        raise ConfigError(
            f"{registry}: template {name!r} has max_new_tokens = {template.max_new_tokens}; use 1 or more"
        )
    used = _variables_used(folder, template.system) | _variables_used(folder, template.user)
    if used != declared:
        raise ConfigError(
            f"{registry}: template {name!r} declares {sorted(declared)} but its files use {sorted(used)}; "
            "make the 'variables' list match the templates"
        )
    return template


def _environment(folder: Path) -> Any:
    from jinja2 import FileSystemLoader, StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    # Sandboxed: a template file cannot reach Python internals; StrictUndefined: a missing variable is an error.
    return SandboxedEnvironment(
        loader=FileSystemLoader(str(folder)), undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
    )


def _variables_used(folder: Path, file: str) -> set[str]:
    from jinja2 import TemplateError, meta

    env = _environment(folder)
    seen: set[str] = set()
    used: set[str] = set()
    pending = [file]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            source = env.loader.get_source(env, name)[0]
            ast = env.parse(source)
        except (OSError, TemplateError) as exc:
            raise ConfigError(f"{folder / name}: cannot load template ({type(exc).__name__}: {exc})") from exc
        used |= meta.find_undeclared_variables(ast)
        pending.extend(str(t) for t in meta.find_referenced_templates(ast) if t)
    return used


def _load_examples(path: Path) -> tuple[Example, ...]:
    examples = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read few-shot examples ({exc.strerror})") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            items = tuple(
                EvidenceItem(
                    str(e["key"]),
                    str(e["title"]),
                    str(e["source"]),
                    str(e["year"]),
                    str(e["type"]),
                    escape_document_text(str(e["text"])),
                )
                for e in row["evidence"]
            )
            examples.append(Example(str(row["question"]), items, str(row["answer"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{path}:{number}: a few-shot example needs question, evidence[key,title,source,year,type,text] "
                f"and answer ({type(exc).__name__}: {exc})"
            ) from exc
    return tuple(examples)


def lost_in_the_middle_order(n: int) -> list[int]:
    """Ranks 0..n-1 placed so the strongest sit at the two ends: 0, 2, 4, ..., 5, 3, 1."""
    return list(range(0, n, 2)) + list(range(1, n, 2))[::-1]


def render(
    template: PromptTemplate,
    question: str,
    evidence: Sequence[Evidence],
    *,
    count_tokens: Callable[[str], int],
    max_prompt_tokens: int,
    patient_lines: Sequence[str] = (),
    examples: Sequence[Example] = (),
) -> RenderedPrompt:
    """Render the chat, fitting as much evidence as the budget allows, strongest first and last."""
    env = _environment(template.folder)
    system = env.get_template(template.system).render()

    numbered = template.numbered

    def user_text(items: Sequence[EvidenceItem]) -> str:
        variables: dict[str, Any] = {
            "question": question,
            "evidence": [i.for_template(numbered) for i in items],
            "patient_lines": list(patient_lines),
        }
        if "examples" in template.variables:
            variables["examples"] = [
                {"question": e.question, "answer": e.answer, "evidence": [i.for_template(numbered) for i in e.evidence]}
                for e in examples
            ]
        return str(env.get_template(template.user).render(**variables)).strip() + "\n"

    base = count_tokens(system) + count_tokens(user_text([])) + 16  # chat-format overhead
    budget = max_prompt_tokens - base
    if budget <= 0:
        raise ConfigError(
            f"prompt {template.label} without evidence already takes {base} tokens, over max_prompt_tokens "
            f"{max_prompt_tokens}; raise answer.max_prompt_tokens or use fewer shots"
        )
    kept = _fit_evidence(evidence, budget, count_tokens, template.numbered)
    order = lost_in_the_middle_order(len(kept))
    items = tuple(evidence_item(f"E{i + 1}", kept[rank][0], kept[rank][1]) for i, rank in enumerate(order))
    user = user_text(items)
    messages = (ChatMessage("system", system), ChatMessage("user", user))
    return RenderedPrompt(
        messages=messages,
        template=template.label,
        evidence=items,
        prompt_tokens=count_tokens(system) + count_tokens(user),
        dropped_evidence=len(evidence) - len(kept),
    )


_KEY_TOKENS = 8  # "[E1.3] " is 5 tokens in Qwen2.5's tokenizer and 6 in SmolLM2's; "[E12.14] " 7 and 8


def _fit_evidence(
    evidence: Sequence[Evidence], budget: int, count_tokens: Callable[[str], int], numbered: bool = False
) -> list[tuple[Evidence, str]]:
    def cost_of(text: str, title: str) -> int:
        keys = _KEY_TOKENS * len(evidence_units(text)) if numbered else 0  # "[E1.3] " before each sentence
        return count_tokens(text) + count_tokens(title) + 24 + keys  # tag, key and attributes

    kept: list[tuple[Evidence, str]] = []
    for item in evidence:
        text = item.chunk.text
        cost = cost_of(text, item.meta.title)
        if cost <= budget:
            kept.append((item, text))
            budget -= cost
            continue
        # The passage that does not fit is cut at a sentence boundary if a useful part of it fits.
        if budget >= 60:
            sentences = re.split(r"(?<=[.!?])\s+", text)
            part = ""
            for sentence in sentences:
                candidate = f"{part} {sentence}".strip()
                if cost_of(candidate, item.meta.title) > budget:
                    break
                part = candidate
            if part:
                kept.append((item, part))
        break
    return kept
