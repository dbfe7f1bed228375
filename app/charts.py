"""Vega-Lite charts as plain spec dicts (st.vega_lite_chart), skipping Altair's per-rerun schema validation.

``st.line_chart`` / ``st.bar_chart`` build and validate an Altair chart on every rerun
(~50-100 ms each on the dev box); these specs are tiny dicts, so charts cost ~nothing.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st


def _long(df: pd.DataFrame, index_name: str) -> pd.DataFrame:
    out = df.copy()
    out.index.name = index_name
    return out.reset_index().melt(id_vars=index_name, var_name="series", value_name="value")


def _color(df: pd.DataFrame, colors: list[str] | None) -> dict:
    enc = {"field": "series", "type": "nominal", "title": None, "sort": list(df.columns)}
    if colors:
        enc["scale"] = {"domain": list(df.columns), "range": list(colors)}
    return enc


def line_chart(df: pd.DataFrame, x_title: str, y_title: str, key: str, colors: list[str] | None = None) -> None:
    """One line per column of ``df`` against its (numeric) index (``colors``: one CSS colour per column)."""
    spec = {
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": {"field": "x", "type": "quantitative", "title": x_title},
            "y": {"field": "value", "type": "quantitative", "title": y_title, "scale": {"zero": False}},
            "color": _color(df, colors),
            "tooltip": [{"field": "series"}, {"field": "x"}, {"field": "value", "format": ".4f"}],
        },
    }
    st.vega_lite_chart(_long(df, "x"), spec, key=key, width="stretch")


def stacked_bars(df: pd.DataFrame, value_title: str, key: str, colors: list[str] | None = None) -> None:
    """Horizontal bars, one per row of ``df``, stacked over its columns (each column one colour)."""
    spec = {
        "mark": {"type": "bar"},
        "encoding": {
            "y": {"field": "row", "type": "nominal", "title": None, "sort": list(df.index)},
            "x": {"field": "value", "type": "quantitative", "title": value_title, "stack": "zero"},
            "color": _color(df, colors),
            "order": {"field": "order", "type": "quantitative"},
            "tooltip": [{"field": "row"}, {"field": "series"}, {"field": "value", "format": ".4f"}],
        },
    }
    data = _long(df, "row")
    data["order"] = data["series"].map({c: i for i, c in enumerate(df.columns)})
    st.vega_lite_chart(data, spec, key=key, width="stretch")
