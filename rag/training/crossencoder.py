"""Training a cross-encoder on labelled text pairs, on the CPU: one loop for the support checker and the reranker.

Pair lengths are measured once; pairs are grouped into batches of similar length (little padding, so little wasted
compute), tokenized per batch, and the batches shuffled each epoch. Class-weighted cross-entropy (inverse
square-root frequency) keeps a rare label, such as "refutes", from being ignored; AdamW with linear warm-up and
decay; seeded, so a run repeats.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rag.models.crossencoder import CrossEncoder


@dataclass(frozen=True)
class LabelledPair:
    first: str
    second: str
    label: int


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 3.0
    batch_size: int = 16
    lr: float = 5e-4  # LoRA matrices and the head
    weight_decay: float = 0.01
    warmup_share: float = 0.1
    label_smoothing: float = 0.05
    class_weighting: bool = True
    seed: int = 13
    max_steps: int | None = None
    bf16: bool = False  # bf16 autocast for the forward pass (CPU with AVX512-BF16: ~20% faster steps measured)
    time_limit_s: float | None = None  # stop (and keep what was learnt) once training has run this long

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_arguments(cls, args: Any) -> TrainConfig:
        """From the `clinrag train` flags (--epochs --batch-size --lr --seed --max-steps --time-limit --fp32)."""
        return cls(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            max_steps=args.max_steps,
            time_limit_s=args.time_limit * 60 if args.time_limit else None,
            bf16=not args.fp32,
        )


@dataclass
class TrainResult:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # mean loss per 25 steps
    stopped_early: str | None = None


class LinearSchedule:
    """Learning-rate factor: linear warm-up, then linear decay to zero at `total`, which may be shortened."""

    def __init__(self, items: int, config: TrainConfig) -> None:
        total = max(1, math.ceil(math.ceil(items / config.batch_size) * config.epochs))
        self.total = min(total, config.max_steps) if config.max_steps is not None else total
        self.warmup = max(1, int(self.total * config.warmup_share))

    def __call__(self, step: int) -> float:
        return min((step + 1) / self.warmup, max(0.0, (self.total - step) / max(1, self.total - self.warmup)))


FIT_CHECK_STEP = 40  # steps timed before the schedule is fitted to the time limit


class StepLoop:
    """What both trainers do around a loss: the optimiser step with clipping and the schedule, the mean loss every
    25 steps, the progress bar, the time limit, and (after FIT_CHECK_STEP steps) the schedule fitted to it."""

    def __init__(self, model: CrossEncoder, optimizer: Any, params: list[Any], items: int, config: TrainConfig,
                 *, progress: bool) -> None:  # fmt: skip
        import torch
        from tqdm import tqdm

        self.plan = LinearSchedule(items, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.plan)
        self.optimizer, self.params, self.config, self.model = optimizer, params, config, model
        self.result = TrainResult(steps=0, seconds=0.0)
        self.window: list[float] = []
        self.started = time.perf_counter()
        self.bar = tqdm(total=self.plan.total, desc="training", unit="step", disable=not progress, dynamic_ncols=True)
        model.encoder.train()
        model.head.train()

    @property
    def running(self) -> bool:
        """False once the schedule is done or the time limit is reached (which then ends the schedule)."""
        if self.result.steps >= self.plan.total:
            return False
        limit = self.config.time_limit_s
        if limit is not None and time.perf_counter() - self.started > limit:
            self.result.stopped_early = f"time limit {limit:.0f} s reached at step {self.result.steps}"
            self.plan.total = self.result.steps
            return False
        return True

    def step(self, loss: Any, **postfix: str) -> float:
        """Back-propagate `loss` and take one step; returns the latest loss value."""
        import torch

        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        result = self.result
        result.steps += 1
        value = float(loss.item())
        self.window.append(value)
        if len(self.window) == 25:
            result.losses.append(sum(self.window) / len(self.window))
            self.window = []
        self.bar.update(1)
        self.bar.set_postfix({"loss": f"{value:.3f}", **postfix})
        if result.steps == FIT_CHECK_STEP and self.config.time_limit_s is not None:
            total = self.plan.total
            fitted = _steps_within(self.config.time_limit_s, time.perf_counter() - self.started, result.steps, total)
            if fitted < total:
                # The learning rate should reach zero when training ends: shorten the schedule to the steps the
                # time limit allows rather than be cut off halfway through it.
                result.stopped_early = f"schedule shortened from {total} to {fitted} steps to fit the time limit"
                self.plan.total = self.bar.total = fitted
        return value

    def finish(self) -> TrainResult:
        self.bar.close()
        if self.window:
            self.result.losses.append(sum(self.window) / len(self.window))
        self.model.encoder.eval()
        self.model.head.eval()
        self.result.seconds = time.perf_counter() - self.started
        return self.result


def _steps_within(limit_s: float, elapsed_s: float, steps: int, total: int) -> int:
    """Steps that fit in `limit_s` at the pace so far (5% spare), never more than `total`."""
    return max(steps + 1, min(total, int(0.95 * limit_s * steps / max(elapsed_s, 1e-9))))


def add_training_arguments(
    parser: Any, *, epochs: float, time_limit_min: float, lr: float = 1e-3, batch_size: int = 16, unit: str = "pairs"
) -> None:
    """The flags every `clinrag train MODEL` shares; `TrainConfig.from_arguments` reads them back."""
    from rag.core.config import DEFAULT_EMBEDDER

    add = parser.add_argument
    add("--epochs", type=float, default=epochs, help=f"passes over the training pairs (default {epochs:g})")
    add("--seed", type=int, default=13, help="random seed (default 13)")
    add("--threads", type=int, metavar="N", help="torch threads (default: torch's choice)")
    add("--lr", type=float, default=lr, help=f"peak learning rate (default {lr:g})")
    add("--batch-size", type=int, default=batch_size, help=f"{unit} per step (default {batch_size})")
    add("--rank", type=int, default=16, help="LoRA rank (default 16)")
    add("--base", default=DEFAULT_EMBEDDER, metavar="MODEL",
        help="encoder to fine-tune: the packaged MiniLM (default), a local folder or a Hugging Face id")  # fmt: skip
    add("--allow-download", action="store_true", help="let a hub id download (needs network)")
    add("--max-steps", type=int, metavar="N", help="stop after N steps (smoke runs)")
    add("--time-limit", type=float, default=time_limit_min, metavar="MIN",
        help=f"stop training after MIN minutes (default {time_limit_min:g})")  # fmt: skip
    add("--fp32", action="store_true", help="fp32 forward passes (default: bf16 autocast)")
    add("--quiet", action="store_true", help="no progress bars")
    add("--json", action="store_true", help="print the training card as JSON")


def class_weights(labels: Sequence[int], n_labels: int) -> list[float]:
    """Inverse square-root frequency, scaled to mean 1 over the examples; a label never seen weighs 1."""
    counts = Counter(labels)
    raw = [1.0 / math.sqrt(counts[i]) if counts[i] else 0.0 for i in range(n_labels)]
    mean = sum(raw[label] for label in labels) / max(len(labels), 1)
    return [w / mean if w else 1.0 for w in raw]


def length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar length: shuffle, sort within windows of 50 batches, cut, shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        part = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def train_cross_encoder(
    model: CrossEncoder,
    examples: Sequence[LabelledPair],
    config: TrainConfig,
    *,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    import torch

    if not examples:
        raise ValueError("no training examples")
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    n_labels = len(model.config.labels)
    lengths = [len(model.tokenizer(e.first, e.second, truncation="longest_first",
                                   max_length=model.config.max_length)["input_ids"]) for e in examples]  # fmt: skip
    weights = class_weights([e.label for e in examples], n_labels) if config.class_weighting else [1.0] * n_labels
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights), label_smoothing=config.label_smoothing)
    params = [p for p in model.encoder.parameters() if p.requires_grad] + list(model.head.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    loop = StepLoop(model, optimizer, params, len(examples), config, progress=progress)
    while loop.running:
        for batch_ids in length_batches(lengths, config.batch_size, rng):
            if not loop.running:
                break
            batch = [examples[i] for i in batch_ids]
            tokens = model.encode([(e.first, e.second) for e in batch])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
                logits = model.logits(tokens)
            value = loop.step(loss_fn(logits.float(), torch.tensor([e.label for e in batch])))
            if on_step is not None:
                on_step(loop.result.steps, value)
    return loop.finish()
