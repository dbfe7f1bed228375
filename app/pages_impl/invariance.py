"""Invariance: permuting feature positions, translating the image, and baseline heads for contrast."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, state
from dgml_viz.appkit import views
from dgml_viz.appkit.settings import checkpoint_label
from dgml_viz.errors import DgmlVizError

handle: state.ModelHandle = st.session_state["_handle"]

st.header("Invariance")
image = state.require_image()

prep = state.prepared(handle, image)
x = prep.tensor
k = handle.model.num_groups
size = int(x.shape[-1])

# ----------------------------------------------------------------------------- (a) permutation
st.subheader("(a) Permute the feature map's positions")
st.caption("The attentive head pools with a softmax over positions, so shuffling the h*w positions of the "
           "feature map must leave every group embedding unchanged and shuffle the attention the same way.")
if "inv_seed" not in st.session_state:
    st.session_state["inv_seed"] = 0


def _reroll() -> None:
    st.session_state["inv_seed"] = int(st.session_state["inv_seed"]) + 1


c = st.columns([1, 1, 4])
c[0].number_input("seed", 0, 10**6, step=1, key="inv_seed")
c[1].button("Re-roll", on_click=_reroll, key="inv_reroll")
perm = state.permutation_probe(handle.key, image.key, int(st.session_state["inv_seed"]), handle.model, x)
m = st.columns(3)
m[0].metric("max |Δ group embedding|", f"{perm['max_abs_group_delta']:.2e}")
m[1].metric("embedding cosine", f"{perm['embedding_cosine']:.6f}")
m[2].metric("max |Δ attention| (un-permuted)",
            "n/a" if perm["attention_max_abs_delta"] is None else f"{perm['attention_max_abs_delta']:.2e}")
if perm["attention_before"] is not None:
    cols = st.columns(3)
    for col, key_, title in zip(cols, ("attention_before", "attention_after", "attention_unpermuted"),
                                ("before", "after (permuted map)", "after, positions put back")):
        col.markdown(f"**{title}**")
        col.image([views.grid_image(a, 120) for a in perm[key_]], caption=[f"group {g}" for g in range(k)])
else:
    st.info(f"The {handle.model.config.head} head has no spatial attention; only the embedding change is shown.")

# ----------------------------------------------------------------------------- (b) translation
st.subheader("(b) Translate the image")
style = views.OverlayStyle(alpha=0.5, norm="shared")
half = size // 2
c = st.columns([2, 2, 1])
dx = c[0].slider("dx (pixels)", -half, half, 0, 1, key="inv_dx")
dy = c[1].slider("dy (pixels)", -half, half, 0, 1, key="inv_dy")
mode = c[2].radio("mode", ["wrap", "pad"], key="inv_mode")
tr = state.translate_probe(handle.key, image.key, int(dx), int(dy), mode, handle.model, x)
m = st.columns(1 + k)
m[0].metric("embedding cosine to original", f"{tr['embedding_cosine']:.4f}")
for g in range(k):
    m[1 + g].metric(f"group {g} cosine", f"{float(tr['group_cosine'][g]):.4f}")
geo = views.tensor_geometry(size)
shifted_view = views.to_view(tr["shifted"], handle.transform)
disp = (240, 240)
cols = st.columns(2)
if tr["attention"] is not None:
    _, comp0 = views.overlays(prep.view, tr["attention"], geo, style, size=disp)
    _, comp1 = views.overlays(shifted_view, tr["attention_shifted"], geo, style, size=disp)
    cols[0].image(comp0, caption="original (model input), composite attention")
    cols[1].image(comp1, caption=f"shifted by ({dx}, {dy}) [{mode}], composite attention")
    moved = tr["peaks_shifted"] - tr["peaks"]
    st.dataframe(pd.DataFrame({"peak before": [tuple(np.round(p, 1)) for p in tr["peaks"]],
                               "peak after": [tuple(np.round(p, 1)) for p in tr["peaks_shifted"]],
                               "moved": [tuple(np.round(p, 1)) for p in moved]},
                              index=[f"group {g}" for g in range(k)]), width="stretch")
    st.caption(f"The attention peaks should move with the object by the shift ({dx}, {dy}) "
               "(modulo the image size in wrap mode).")
else:
    cols[0].image(views.resize_rgb(prep.view, disp), caption="original (model input)")
    cols[1].image(views.resize_rgb(shifted_view, disp), caption=f"shifted by ({dx}, {dy}) [{mode}]")

axis = st.radio("curve axis", ["x", "y", "xy"], horizontal=True, key="inv_axis")
step = max(1, size // 16)
if getattr(handle.model.backbone, "position_embedding", False):  # declared by ViT-like backbones
    step = int(getattr(handle.model.backbone, "stride", step))
    st.caption(f"This backbone adds position embeddings: (a) holds for the head on its tokens, but the backbone "
               f"is not translation invariant. Shifts here are multiples of the {step}-px patch, so in wrap mode "
               "the patches are only permuted and any cosine below 1 comes from the position embeddings.")
shifts = tuple(range(-half, half + 1, step))
curve = state.translation_curve(handle.key, image.key, mode, axis, shifts, handle.model, x)
df = pd.DataFrame({"embedding": curve["embedding_cosine"],
                   **{f"group {g}": [row[g] for row in curve["group_cosine"]] for g in range(k)}},
                  index=pd.Index(curve["shifts"], name="shift (px)"))
charts.line_chart(df, "shift (pixels)", "cosine to the original", key="inv_curve_chart",
                  colors=["#000000", *views.group_hex_colors(k)])

# ----------------------------------------------------------------------------- (c) other heads
st.subheader("(c) Baseline heads for contrast")
# only the picked checkpoints are loaded: the folder may be a whole training output tree
candidates = [p for p in state.checkpoint_choices()
              if p not in (state.UPLOAD_LABEL, state.FALLBACK_LABEL) and f"file:{p}:" not in handle.key]
picks = st.multiselect("compare with", candidates, default=candidates[:3], key="inv_others",
                       format_func=lambda p: checkpoint_label(Path(p))) if candidates else []
others, skipped = [], []
for path in picks:
    try:
        other = state.model_from_file(Path(path))
    except DgmlVizError as exc:
        skipped.append(f"{checkpoint_label(Path(path))}: {exc}")
        continue
    if other.transform["size"] == handle.transform["size"]:
        others.append(other)
    else:
        skipped.append(f"{other.label}: input {other.transform['size']} px, not {handle.transform['size']} px")
for line in skipped:
    st.caption(f"not compared: {line}")
if not others:
    st.info("Load gap / gate (or other) checkpoints of the same input size into the checkpoint folder to "
            "compare their invariance with this model's.")
else:
    rows, curves = [], {f"{handle.label} ({handle.model.config.head})": curve["embedding_cosine"]}
    for o in others:
        ox = state.prepared(o, image).tensor
        p = state.permutation_probe(o.key, image.key, int(st.session_state["inv_seed"]), o.model, ox)
        cv = state.translation_curve(o.key, image.key, mode, axis, shifts, o.model, ox)
        t = state.translate_probe(o.key, image.key, int(dx), int(dy), mode, o.model, ox)
        rows.append({"checkpoint": o.label, "head": o.model.config.head,
                     "max |Δ group| (permutation)": p["max_abs_group_delta"],
                     f"cosine at ({dx}, {dy})": t["embedding_cosine"],
                     "mean cosine over curve": float(np.mean(cv["embedding_cosine"]))})
        curves[f"{o.label} ({o.model.config.head})"] = cv["embedding_cosine"]
    rows.insert(0, {"checkpoint": handle.label, "head": handle.model.config.head,
                    "max |Δ group| (permutation)": perm["max_abs_group_delta"],
                    f"cosine at ({dx}, {dy})": tr["embedding_cosine"],
                    "mean cosine over curve": float(np.mean(curve["embedding_cosine"]))})
    st.dataframe(pd.DataFrame(rows).set_index("checkpoint").style.format(precision=4), width="stretch")
    charts.line_chart(pd.DataFrame(curves, index=pd.Index(list(shifts), name="shift (px)")),
                      "shift (pixels)", "embedding cosine", key="inv_contrast_chart")
