"""Cached access to core/ for the pages: models as resources, results as data."""

from __future__ import annotations

import streamlit as st

from core.checkpoints import SAMPLE_MODELS_DIR, load_checkpoint


def sample_models() -> list[str]:
    return sorted(path.stem for path in SAMPLE_MODELS_DIR.glob("*.json"))


@st.cache_resource(show_spinner="Loading model...")
def cached_checkpoint(path: str):
    """(model, card) for a checkpoint path; shared by every session, never modified."""
    return load_checkpoint(path)
