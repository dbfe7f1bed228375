"""Training page: open a run folder, see its loss / metric curves and how the groups formed.

Reads the run's own files (``log.csv``, ``timeline.npz``; see :mod:`dgml_viz.train.logging_tb`), no
TensorBoard server. The folder must lie under the allowed roots (``DGML_VIZ_ALLOWED_ROOTS``).
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import pandas as pd
import streamlit as st

from app import charts, widgets
from dgml_viz.appkit import paths
from dgml_viz.appkit.settings import allowed_roots
from dgml_viz.errors import DgmlVizError
from dgml_viz.train import logging_tb

st.header("Training")
st.caption("A training run's curves (from its log.csv) and its attention timeline: each group's map on a few "
           "held-out probe images after every epoch (from timeline.npz, written with train.tensorboard=true).")


@st.cache_data(max_entries=16, show_spinner=False)
def _history(folder: str, mtime: float) -> list[dict[str, float]]:
    return logging_tb.read_history(folder)


@st.cache_data(max_entries=4, show_spinner=False)
def _timeline(folder: str, mtime: float) -> logging_tb.Timeline:
    return logging_tb.Timeline.load(Path(folder) / logging_tb.TIMELINE_FILE)


@st.cache_data(max_entries=8, show_spinner="Drawing the timeline...")
def _timeline_png(folder: str, mtime: float, probes: tuple[int, ...], max_rows: int) -> bytes:
    return logging_tb.timeline_png(folder, probes=list(probes), max_rows=max_rows)


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


def _finite_columns(df: pd.DataFrame) -> pd.DataFrame:
    return df.loc[:, [c for c in df.columns if df[c].notna().any()]]


roots = allowed_roots()
text = st.text_input("run folder", key="train_run",
                     help="a folder written by `dgml-viz train --run-dir` (allowed roots: "
                          + ", ".join(map(str, roots)) + ")")
if not text.strip():
    st.info("Enter a training run folder to see its curves and attention timeline.")
    st.stop()
try:
    run = paths.resolve_folder(text, roots)
    history = _history(str(run), _mtime(run / "log.csv"))
except DgmlVizError as exc:
    widgets.error_line(exc)
    st.stop()
if not history:
    st.warning(f"{run}: log.csv has no epochs yet")
    st.stop()

log = pd.DataFrame(history).set_index("epoch")
last = history[-1]
cols = st.columns(3)
cols[0].metric("epochs", f"{int(last['epoch'])}")
cols[1].metric("steps", str(int(last["step"])) if not math.isnan(last.get("step", math.nan)) else "–")
evaluated = log["recall@1"].dropna() if "recall@1" in log else pd.Series(dtype=float)
cols[2].metric("last recall@1", f"{evaluated.iloc[-1]:.4f}" if len(evaluated) else "–")

st.subheader("Loss")
terms = [c for c in log.columns if c == "loss" or c.endswith("_loss")]
shown = st.multiselect("terms", terms, default=[t for t in ("loss", "metric_loss") if t in terms] or terms[:1],
                       key="train_terms", help="epoch means of each term the loss returned (loss = the total)")
if shown:
    charts.line_chart(log[shown], "epoch", "loss", key="train_loss_chart")

st.subheader("Retrieval")
metric_cols = [c for c in log.columns if c.startswith("recall@") or c in ("map@r", "nmi") or c.endswith("_recall@1")]
if metric_cols and len(evaluated):
    charts.line_chart(_finite_columns(log.loc[evaluated.index, metric_cols]), "epoch", "test metric",
                      key="train_metric_chart")
else:
    st.info("No evaluation logged yet.")

st.subheader("Attention timeline")
tl_path = run / logging_tb.TIMELINE_FILE
if not tl_path.is_file():
    st.info(f"{run}: no timeline.npz (the run was trained with train.tensorboard=false, or before it existed).")
    st.stop()
try:
    tl = _timeline(str(run), _mtime(tl_path))
except DgmlVizError as exc:
    widgets.error_line(exc)
    st.stop()

families: dict[str, list[str]] = defaultdict(list)
for name in tl.stat_names:
    family, _, series = name.rpartition("/")
    families[family].append(name)
if families:
    family = st.selectbox("statistic (held-out probe subset, every epoch)", sorted(families), key="train_stat",
                          index=sorted(families).index("parts/share") if "parts/share" in families else 0)
    stat = pd.DataFrame({n.rpartition("/")[2]: tl.stat(n) for n in families[family]}, index=tl.epochs)
    charts.line_chart(stat, "epoch", family, key="train_stat_chart")

n_probes = int(tl.images.shape[0])
c1, c2 = st.columns(2)
probes = c1.multiselect("probe images", list(range(n_probes)), default=list(range(n_probes)), key="train_probes")
max_rows = int(c2.number_input("rows (evaluations)", min_value=1, max_value=max(1, len(tl)), value=min(12, len(tl)),
                               step=1, key="train_rows"))
if not probes:
    st.info("Pick at least one probe image.")
    st.stop()
try:
    png = _timeline_png(str(run), _mtime(tl_path), tuple(int(p) for p in probes), max_rows)
except DgmlVizError as exc:
    widgets.error_line(exc)
    st.stop()
st.image(png, caption=f"{len(tl)} epochs logged; rows: evaluations (first and last kept), "
                      "columns: groups x probe images", width="stretch")
st.download_button("Download timeline (PNG)", data=png, file_name="attention_timeline.png", mime="image/png",
                   key="train_download", on_click="ignore")
