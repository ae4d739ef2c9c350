"""Widgets generated from data: a method's config form from its dataclass."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app.charts import config_fields


def config_form(config_class, key: str) -> dict[str, Any]:
    """One widget per field of `config_class` (a bool: checkbox; choices: selectbox; numbers:
    number inputs within the field's range); returns {name: value}. Call inside a st.form."""
    values = {}
    for spec in config_fields(config_class):
        name, default, widget_key = spec["name"], spec["default"], f"cfg_{key}_{spec['name']}"
        label, help_text = name.replace("_", " "), spec["help"] or None
        if spec["kind"] == "bool":
            values[name] = st.checkbox(label, value=default, help=help_text, key=widget_key)
        elif spec["choices"]:
            choices = list(spec["choices"])
            values[name] = st.selectbox(label, choices, index=choices.index(default), help=help_text,
                                        key=widget_key)
        elif spec["kind"] == "int":
            values[name] = int(st.number_input(label, value=int(default), step=1, help=help_text,
                                               min_value=_bound(spec["low"], int),
                                               max_value=_bound(spec["high"], int), key=widget_key))
        elif spec["kind"] == "float":
            values[name] = float(st.number_input(label, value=float(default), format="%g", help=help_text,
                                                 min_value=_bound(spec["low"], float),
                                                 max_value=_bound(spec["high"], float), key=widget_key))
        else:
            values[name] = st.text_input(label, value=str(default), help=help_text, key=widget_key)
    return values


def _bound(value, kind):
    return None if value is None else kind(value)
