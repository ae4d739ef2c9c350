"""Evaluation: split metrics of a request, UIS / ILI / TLI, membership inference, gradient conflict."""

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
    uis_breakdown,
    uis_terms,
)

__all__ = [
    "ConflictReport", "analyze_conflicts", "at_risk_instances", "cosine", "cosine_matrix",
    "cosine_matrix_by_layer", "evaluate_request", "fixed_retain_sample", "ili", "instance_interference",
    "loss_features", "membership_inference", "mia_from_features", "oracle_gap", "primary_scores",
    "task_gradients", "task_interference", "tli", "uis", "uis_breakdown", "uis_terms",
]
