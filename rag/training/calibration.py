"""Fitting the calibrated support checker: L2 logistic regression by Newton steps, weights held to their expected
signs, and the best-F1 threshold. Plain numpy; the result is a `SupportCalibration` the checker loads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from rag.checking.support import (
    COMBINED_FEATURES,
    EXPECTED_SIGNS,
    FitCounts,
    Floats,
    SupportCalibration,
    sigmoid,
)


def fit_logistic(x: Floats, y: Floats, *, l2: float = 1.0, iterations: int = 50) -> tuple[Floats, float]:
    """L2-penalised logistic regression by Newton steps; the intercept is not penalised. Returns (w, b)."""
    n, d = x.shape
    design = np.column_stack([x, np.ones(n)])
    penalty = np.diag([l2] * d + [0.0])
    beta = np.zeros(d + 1)
    for _ in range(iterations):
        p = sigmoid(design @ beta)
        gradient = design.T @ (p - y) + penalty @ beta
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if float(np.abs(step).max()) < 1e-10:
            break
    return beta[:d], float(beta[d])


def fit_signed_logistic(x: Floats, y: Floats, signs: Sequence[int], *, l2: float = 1.0) -> tuple[Floats, float]:
    """Logistic fit whose weights keep their expected signs (+1, -1; 0 = free).

    A feature fitted with the wrong sign is dropped (weight 0) and the rest refitted, worst first: on a
    few hundred noisy labels a negative weight on "the claim's words are in the evidence" is noise, not
    knowledge, and would invert the checker on text unlike the calibration set.
    """
    active = list(range(x.shape[1]))
    while True:
        weights = np.zeros(x.shape[1])
        fitted, intercept = fit_logistic(x[:, active], y, l2=l2)
        weights[active] = fitted
        wrong = [j for j in active if signs[j] * weights[j] < 0]
        if not wrong:
            return weights, intercept
        active.remove(max(wrong, key=lambda j: abs(weights[j])))


def best_f1_threshold(scores: Floats, labels: Floats) -> float:
    """Threshold maximising F1 of the positive class, halfway between the two scores it separates."""
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], labels[order]
    tp = np.cumsum(hits)
    f1 = 2 * tp / (np.arange(1, len(ranked) + 1) + hits.sum())
    # Only cut where the score changes: tied scores are all positive or all negative.
    cuts = np.flatnonzero(np.append(ranked[1:] < ranked[:-1], True))
    best = int(cuts[np.argmax(f1[cuts])])
    return float((ranked[best] + ranked[best + 1]) / 2) if best + 1 < len(ranked) else float(ranked[best])


def fit_calibration(
    features: Floats,
    labels: Floats,
    *,
    feature_names: Sequence[str] = COMBINED_FEATURES,
    embedder: str | None = None,
    l2: float = 1.0,
    constrain_signs: bool = True,
    fitted_on: FitCounts | None = None,
    fitted_at: str = "",
) -> SupportCalibration:
    """Standardise, fit (weights kept to EXPECTED_SIGNS unless told not to), pick the best-F1 threshold on the
    same data. Pure: no I/O."""
    x, y = np.asarray(features, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if x.ndim != 2 or x.shape != (len(y), len(feature_names)) or len(y) < 2:
        raise ValueError(f"features {x.shape} must be (n >= 2, {len(feature_names)}) matching {len(y)} labels")
    if l2 <= 0:
        raise ValueError(f"l2 must be > 0 (it keeps Newton steps finite on separable data), got {l2}")
    if not np.isin(y, (0.0, 1.0)).all() or y.min() == y.max():
        raise ValueError("labels must be 0/1 and contain both classes")
    mean = x.mean(axis=0)
    scale = np.where(x.std(axis=0) > 1e-12, x.std(axis=0), 1.0)
    signs = [EXPECTED_SIGNS.get(f, 0) if constrain_signs else 0 for f in feature_names]
    weights, intercept = fit_signed_logistic((x - mean) / scale, y, signs, l2=l2)
    calibration = SupportCalibration(
        tuple(feature_names), tuple(mean.tolist()), tuple(scale.tolist()), tuple(weights.tolist()), intercept,
        0.5, embedder, l2,
        fitted_on or FitCounts("unspecified", len(y), int(y.sum()), 0, ()), fitted_at,
    )  # fmt: skip
    threshold = best_f1_threshold(calibration.probabilities(x), y)
    return replace(calibration, threshold=threshold)
