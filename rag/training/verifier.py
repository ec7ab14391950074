"""Training the support checker: which pairs it learns from, which it is validated on, and the training card.

Training: HealthVer dev and K-QA physician NLI labels outside their validation groups (20% of HealthVer topics and
of K-QA questions, by a hash of the group fixed before any training), and SciFact train (rationales, rationales with
their neighbouring sentences, and neutral sentence pairs), plus a polarity-flipped "refutes" copy of each supported
training pair a negation rule fits. Validation, never trained on: those held-out groups,
SciFact dev, and ExpertQA (supports vs not, kept out of training entirely: its experts judged whole web pages).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.checking.verdict import LABELS
from rag.core.errors import ConfigError
from rag.core.files import file_sha256
from rag.datasets.claims import (
    VALIDATION_SHARE,
    ClaimPair,
    read_expertqa_pairs,
    read_healthver,
    read_kqa_nli,
    read_scifact,
    select_split,
)
from rag.models.crossencoder import CrossEncoder, CrossEncoderConfig
from rag.training.claim_negation import negated_pairs
from rag.training.crossencoder import LabelledPair, TrainConfig, train_cross_encoder

FILES = {
    "healthver": "claims/healthver/healthver_dev.csv",
    "scifact_train": "claims/scifact/claims_train.jsonl",
    "scifact_dev": "claims/scifact/claims_dev.jsonl",
    "scifact_corpus": "claims/scifact/corpus.jsonl",
    "kqa_nli": "kqa/nli_medical_annotator.csv",
    "expertqa": "expertqa/expertqa_medicine_dev.jsonl",
}


@dataclass(frozen=True)
class VerifierData:
    train: list[ClaimPair]
    validation: dict[str, list[ClaimPair]]  # set name -> pairs
    files: dict[str, str]  # relative path -> sha256
    negated: int = (
        0  # training pairs that are polarity-flipped copies of supported ones (rag/training/claim_negation.py)
    )


def load_verifier_data(root: Path, *, negations: bool = True, hard_neutrals: bool = True) -> VerifierData:
    paths = {name: root / rel for name, rel in FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ConfigError(
            f"training data missing: {', '.join(missing)}; pass --data pointing at the shared data folder "
            "(it holds claims/, kqa/ and expertqa/)"
        )
    healthver = read_healthver(paths["healthver"])
    kqa = read_kqa_nli(paths["kqa_nli"])
    scifact_train = read_scifact(
        paths["scifact_train"], paths["scifact_corpus"], context=True, hard_neutrals=hard_neutrals
    )
    train = [*select_split(healthver, "train", VALIDATION_SHARE), *select_split(kqa, "train", VALIDATION_SHARE)]
    train += scifact_train
    flipped = negated_pairs(train) if negations else []
    train += flipped
    validation = {
        "healthver-validation": select_split(healthver, "validation", VALIDATION_SHARE),
        "scifact-dev": read_scifact(paths["scifact_dev"], paths["scifact_corpus"]),
        "kqa-nli-validation": select_split(kqa, "validation", VALIDATION_SHARE),
        "expertqa": read_expertqa_pairs(paths["expertqa"]),
    }
    train_groups = {(p.source, p.group) for p in train}
    for name, pairs in validation.items():
        leaked = {(p.source, p.group) for p in pairs} & train_groups
        if leaked:  # cannot happen by construction; checked because a leak would void every figure
            raise ConfigError(f"validation set {name} shares groups with training: {sorted(leaked)[:3]}")
    files = {rel: file_sha256(paths[name]) for name, rel in FILES.items()}
    return VerifierData(train, validation, files, len(flipped))


def as_training_examples(pairs: list[ClaimPair]) -> list[LabelledPair]:
    """(evidence, claim) order: the premise first, as the model reads it at inference."""
    return [LabelledPair(p.evidence, p.claim, p.label_index) for p in pairs]


def data_summary(data: VerifierData) -> dict[str, Any]:
    def counts(pairs: list[ClaimPair]) -> dict[str, Any]:
        by_source = Counter(p.source for p in pairs)
        return {
            "pairs": len(pairs),
            "labels": {label: sum(p.label == label for p in pairs) for label in LABELS},
            "by_source": dict(by_source),
            "groups": len({(p.source, p.group) for p in pairs}),
        }

    return {
        "files_sha256": data.files,
        "validation_share": VALIDATION_SHARE,
        "split_rule": "a group is validation when int(sha256('source:group')[:8], 16) / 0xFFFFFFFF < share",
        "train": counts(data.train),
        "train_negated_copies": data.negated,
        "validation": {name: counts(pairs) for name, pairs in data.validation.items()},
        "held_out_healthver_topics": sorted({p.group for p in data.validation["healthver-validation"]}),
        "not_trained_on": ["SciFact dev", "ExpertQA (all)", "held-out HealthVer topics", "held-out K-QA questions"],
    }


def train_verifier(
    data: VerifierData,
    out: Path,
    config: TrainConfig,
    *,
    model_config: CrossEncoderConfig | None = None,
    progress: bool = True,
    allow_download: bool = False,
) -> tuple[CrossEncoder, dict[str, Any]]:
    """Train, save the artefact into `out`, return the model and the card's training section."""
    model_config = model_config or CrossEncoderConfig(labels=LABELS)
    model = CrossEncoder.new(model_config, seed=config.seed, allow_download=allow_download)
    started = time.perf_counter()
    result = train_cross_encoder(model, as_training_examples(data.train), config, progress=progress)
    model.save(out)
    return model, {
        "steps": result.steps,
        "train_seconds": round(result.seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "loss_every_25_steps": [round(x, 4) for x in result.losses],
        "stopped_early": result.stopped_early,
    }
