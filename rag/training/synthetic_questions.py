"""Training questions written by a language model for guideline recommendations (InPars / GPL style).

Why: the reranker trained on MedQuAD's templates reads the heading, not the topic; guideline recommendations and
the questions clinicians ask about them are another shape of data. Each recommendation of a guideline's "Major
Recommendations" field (a numbered item, a bullet or a paragraph that recommends) is shown to the model with its
guideline's title and section heading, and the model writes one question that the recommendation answers without
stating its answer. The written question, the guideline's id and the recommendation (as `evidence`) are one line of
the output: the same fields as the judged NGC questions (rag.datasets.guideline_questions), so the reranker's
trainer mines them like any judged set.

Guidelines named in an exclusion file (the dev questions' `doc_id`s) are never read: they measure generalisation.
Lines already in the output are kept and their recommendations skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rag.core.errors import ConfigError
from rag.core.files import read_jsonl_objects

RECOMMENDATIONS_HEADING = "## major recommendations"
_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*+])\s+")
_RECOMMENDS = re.compile(
    r"\b(recommend|suggest|should|consider|indicated|first[- ]line|offer|prescribe|treat|avoid|not be used|"
    r"refer|screen|contraindicated|mg|dose|daily|weeks?|months?)\b",
    re.I,
)
_BOILERPLATE = re.compile(r"^(note from|see the original|the strength of|definitions?:|levels? of evidence)", re.I)
_MARKUP = re.compile(r"[*_`#>]+")
MIN_CHARS, MAX_CHARS = 80, 700

STYLES = (
    "as a busy clinician would ask it at the point of care, in one short sentence",
    "as a clinician would ask it about a specific patient: one short sentence describing the patient (age, sex, "
    "the condition), then the question",
    "as a patient or carer would type it into a search box, in plain words",
)


@dataclass(frozen=True)
class Recommendation:
    doc_id: str
    title: str
    section: str
    text: str

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.doc_id}\n{self.text}".encode()).hexdigest()[:16]


def front_matter_field(text: str, name: str) -> str:
    match = re.search(rf'^{name}:\s*"?(.*?)"?\s*$', text, re.M)
    return match.group(1) if match else ""


def plain(text: str) -> str:
    return " ".join(_MARKUP.sub("", text).split())


def recommendations(markdown: str, doc_id: str) -> list[Recommendation]:
    """The recommending items and paragraphs of the Major Recommendations field, each with its nearest heading."""
    title = front_matter_field(markdown, "title") or doc_id
    lines = markdown.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().lower() == RECOMMENDATIONS_HEADING), None)
    if start is None:
        return []
    section, block, found = "", list[str](), list[Recommendation]()

    def flush() -> None:
        text = plain(" ".join(block))
        block.clear()
        # A lead-in ending with ':' needs its list, which is another block: it is not a recommendation alone.
        complete = not text.endswith(":")
        recommends = bool(_RECOMMENDS.search(text)) and not _BOILERPLATE.match(text)
        if MIN_CHARS <= len(text) <= MAX_CHARS and complete and recommends:
            found.append(Recommendation(doc_id, title, section, text))

    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("#"):
            flush()
            section = plain(line.lstrip("#"))
        elif not line.strip() or _ITEM.match(line):
            flush()
            if line.strip():
                block.append(_ITEM.sub("", line))
        else:
            block.append(line)
    flush()
    return found


def excluded_documents(paths: Iterable[Path]) -> set[str]:
    """`doc_id`s of question files (JSONL) whose guidelines must never be trained on."""
    out: set[str] = set()
    for path in paths:
        out.update(str(row["doc_id"]) for row in read_jsonl_objects(path, "exclusion file") if row.get("doc_id"))
    return out


def pick_recommendations(
    folder: Path, *, exclude: set[str], per_guideline: int, limit: int, seed: int
) -> list[Recommendation]:
    """Up to `per_guideline` recommendations from each Markdown guideline not excluded, shuffled, at most `limit`."""
    files = sorted(folder.glob("*.md"))
    if not files:
        raise ConfigError(f"{folder}: no Markdown guidelines (*.md); give the folder of the NGC summaries")
    rng = random.Random(seed)
    chosen: list[Recommendation] = []
    for file in files:
        markdown = file.read_text(encoding="utf-8", errors="replace")
        doc_id = front_matter_field(markdown, "id") or file.stem
        if doc_id in exclude:
            continue
        found = recommendations(markdown, doc_id)
        chosen.extend(rng.sample(found, min(per_guideline, len(found))))
    rng.shuffle(chosen)
    return chosen[:limit]


def question_prompt(rec: Recommendation, style: str) -> tuple[str, str]:
    """(system, user) messages asking for one question that the recommendation answers."""
    system = "You write the questions that people ask about medical care. You reply with one question only."
    user = (
        f"Guideline: {rec.title}\nSection: {rec.section or 'Major Recommendations'}\nRecommendation: {rec.text}\n\n"
        f"Write one question that this recommendation answers, {style}. Name the condition, but do not give the "
        "answer: no drug names, doses, durations or thresholds from the recommendation. Ask what to do, not what "
        "the guideline says. Reply with the question only.\n\nExample, for 'Adults with community-acquired "
        "pneumonia and no comorbidities should receive amoxicillin 1 g three times daily': 'A healthy 40-year-old "
        "has community-acquired pneumonia and can be treated at home. Which antibiotic should I start?'"
    )
    return system, user


def clean_question(reply: str) -> str | None:
    """The first line of the reply as a question, or None when it is not one (too short, too long, no '?')."""
    line = next((s.strip() for s in reply.strip().splitlines() if s.strip()), "")
    line = re.sub(r"^(question:|q:)\s*", "", line, flags=re.I).strip().strip('"').strip()
    if "?" not in line:
        return None
    line = line[: line.rindex("?") + 1]
    return line if 4 <= len(line.split()) <= 60 else None


_TOPIC_WORD = re.compile(r"[a-z][a-z0-9-]{3,}")
_COMMON = frozenset(
    "what which when should does with that this from have about patient patients treatment "
    "treat management guideline recommended recommendation care child children adult adults "
    "woman women people person year years old start best need".split()
)


def names_topic(question: str, rec: Recommendation) -> bool:
    """The question shares a content word with its guideline's title or section: it names what it is about."""
    topic = set(_TOPIC_WORD.findall(f"{rec.title} {rec.section}".lower())) - _COMMON
    return bool(topic & set(_TOPIC_WORD.findall(question.lower())))


def done_keys(path: Path) -> set[str]:
    if not path.exists():
        return set()
    keys = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            keys.add(str(json.loads(line)["key"]))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by an interrupted run: its recommendation is written again
    return keys


def write_questions(
    recs: Sequence[Recommendation],
    ask: Callable[[str, str], str],
    out: Path,
    *,
    seed: int,
    progress: bool = True,
) -> dict[str, int]:
    """Ask for a question per recommendation not yet in `out`, appending each as soon as it is written."""
    from tqdm import tqdm

    rng = random.Random(seed)
    done = done_keys(out)
    stats = {"written": 0, "rejected": 0, "already_done": 0, "failed": 0}
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as sink:
        for rec in tqdm(recs, desc="questions", unit="rec", disable=not progress, dynamic_ncols=True):
            style = rng.choice(STYLES)
            if rec.key in done:
                stats["already_done"] += 1
                continue
            try:
                question = clean_question(ask(*question_prompt(rec, style)))
            except Exception as exc:  # one failed generation never ends a long run
                stats["failed"] += 1
                print(f"warning: {rec.doc_id}: generation failed ({exc}); skipped")
                continue
            if question is None or not names_topic(question, rec):
                stats["rejected"] += 1
                continue
            row = {"_id": f"syn-{rec.key}", "key": rec.key, "text": question, "doc_id": rec.doc_id,
                   "evidence": rec.text, "section": rec.section, "style": STYLES.index(style)}  # fmt: skip
            sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            sink.flush()
            stats["written"] += 1
    return stats
