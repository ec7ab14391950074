"""Listwise training of a two-label cross-encoder (a reranker): each question's positive against its own negatives.

A pointwise loss (is this pair relevant?) failed twice here: with one positive to five negatives, and short
sentence pairs half relevant, "short text means relevant" fitted the labels better than reading the text, and one
run collapsed to a constant score. The listwise loss compares each positive only with the negatives retrieved for
the same question, so nothing that is shared by the whole group (question wording, the length of its passages)
can lower it: only what tells the judged passage from its near misses can.

The score of a candidate is the model's margin (log-odds of "relevant") plus `w * -ln(1 + rank)`, where `rank` is
the candidate's fused retrieval rank and `w` is learnt with the model (the prior; rank 0 where there is none, as
for sentence groups). The loss is the cross-entropy of the softmax over the group with the positive as target.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from rag.models.crossencoder import CrossEncoder, rank_feature
from rag.training.crossencoder import StepLoop, TrainConfig, TrainResult


@dataclass(frozen=True)
class RankGroup:
    """A question, its positive (first) and its negatives, each with its fused rank (0-based; None: no prior)."""

    query: str
    passages: tuple[str, ...]
    ranks: tuple[int | None, ...]

    def __post_init__(self) -> None:
        if len(self.passages) < 2 or len(self.passages) != len(self.ranks):
            raise ValueError("a rank group needs a positive, at least one negative, and one rank per passage")


def train_listwise(
    model: CrossEncoder,
    groups: Sequence[RankGroup],
    config: TrainConfig,
    *,
    learn_prior: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Train `model` in place (config.batch_size groups per step); sets model.config.rank_prior when learnt."""
    import torch

    if not groups:
        raise ValueError("no training groups")
    if len(model.config.labels) != 2:
        raise ValueError(f"listwise training needs a two-label model, this one has {model.config.labels}")
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    prior = torch.nn.Parameter(torch.tensor(1.0 if learn_prior else 0.0), requires_grad=learn_prior)
    params = [p for p in model.encoder.parameters() if p.requires_grad] + list(model.head.parameters())
    param_groups: list[dict[str, Any]] = [{"params": params}, {"params": [prior], "lr": 1e-2, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(
        param_groups,
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    loop = StepLoop(model, optimizer, params, len(groups), config, progress=progress)
    order = list(range(len(groups)))
    while loop.running:
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            if not loop.running:
                break
            batch = [groups[i] for i in order[start : start + config.batch_size]]
            loop.step(_group_loss(model, batch, prior, config.bf16), prior=f"{prior.item():.2f}")
    result = loop.finish()
    model.config = replace(model.config, rank_prior=round(float(prior.item()), 4))
    return result


def _group_loss(model: CrossEncoder, batch: Sequence[RankGroup], prior: Any, bf16: bool) -> Any:
    """Mean over the groups of -log softmax(positive) among the group's scores; one forward pass for all pairs."""
    import torch

    pairs = [(g.query, p) for g in batch for p in g.passages]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model.logits(model.encode(pairs))
    margins = (logits[:, 0] - logits[:, 1]).float()
    features = torch.tensor([rank_feature(r) for g in batch for r in g.ranks])
    scores = margins + prior * features
    losses = []
    start = 0
    for group in batch:
        group_scores = scores[start : start + len(group.passages)]
        losses.append(-torch.log_softmax(group_scores, dim=0)[0])
        start += len(group.passages)
    return torch.stack(losses).mean()
