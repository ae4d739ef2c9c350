"""Evaluation: split metrics of a request, UIS / ILI / TLI, membership inference, gradient conflict,
the comparison of several models on one request; the benchmark protocol lives in
`core.evaluation.benchmark`, its report in `core.evaluation.report` and the figures in
`core.evaluation.figures`."""

from core.evaluation.compare import Comparison, compare_methods, compare_models
from core.evaluation.conflict import (
    ConflictReport,
    analyze_conflicts,
    at_risk_instances,
    cosine,
    cosine_matrix,
    cosine_matrix_by_layer,
    task_gradients,
)
from core.evaluation.metrics import evaluate_request, fixed_retain_sample
from core.evaluation.mia import loss_features, membership_inference, mia_from_features
from core.evaluation.uis import (
    ili,
    instance_interference,
    oracle_gap,
    primary_scores,
    task_interference,
    tli,
    uis,
    uis2,
    uis2_breakdown,
    uis2_terms,
    uis_breakdown,
    uis_terms,
)

__all__ = [
    "Comparison", "ConflictReport", "analyze_conflicts", "compare_methods", "compare_models",
    "at_risk_instances", "cosine", "cosine_matrix",
    "cosine_matrix_by_layer", "evaluate_request", "fixed_retain_sample", "ili", "instance_interference",
    "loss_features", "membership_inference", "mia_from_features", "oracle_gap", "primary_scores",
    "task_gradients", "task_interference", "tli", "uis", "uis2", "uis2_breakdown", "uis2_terms",
    "uis_breakdown", "uis_terms",
]
