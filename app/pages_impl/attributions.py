"""Attributions: captum IG and Grad-CAM of a group's similarity to a reference, beside its attention."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import state
from dgml_viz.appkit import views
from dgml_viz.index.search import neighbours
from dgml_viz.metrics.agreement import rank_correlation

handle: state.ModelHandle = st.session_state["_handle"]

st.header("Attributions")
st.caption("Which pixels make group g of this image similar to group g of a reference image? "
           "Integrated Gradients (pixels) and Grad-CAM (last feature map) of cos(f_g(x), f_g(ref)), "
           "beside the group's attention, with their Spearman rank correlation.")
image = state.require_image()

prep = state.prepared(handle, image)
enc = state.encoded(handle, image)
k = handle.model.num_groups
index = state.demo_index(handle)
REF_KINDS = ("nearest held-out neighbour", "a held-out demo image", "the image itself")
c = st.columns([1, 2, 2, 1])
group = c[0].selectbox("group", list(range(k)), key="attr_group", format_func=lambda g: f"group {g}")
ref_kind = c[1].radio("reference", REF_KINDS, key="attr_ref_kind")
ref_idx = c[2].number_input(f"reference index (0-{len(index) - 1})", 0, len(index) - 1, 0, 1, key="attr_ref_index",
                            disabled=ref_kind != REF_KINDS[1])
steps = c[3].select_slider("IG steps", [4, 8, 16, 32, 64], value=8, key="attr_steps",
                           help="integration points of Integrated Gradients (more: closer to completeness, slower)")
if ref_kind == REF_KINDS[2]:
    ref_groups, ref_key, ref_view = enc.groups[0], f"self:{image.key}", prep.view
    st.caption("At the reference itself the similarity is at its maximum (1), so its gradient is ~0: Grad-CAM "
               "is (near) empty there; Integrated Gradients still integrates from the baseline.")
else:
    if ref_kind == REF_KINDS[0]:
        same = image.demo_index if image.demo_index is not None and len(index) > 1 else None
        ref_i = neighbours(enc.groups[0], index.searcher, k=1, groups=[int(group)], exclude=same)[0].index
    else:
        ref_i = int(ref_idx)
    ref_groups, ref_key, ref_view = index.groups[ref_i], f"demo:{ref_i}", index.views[ref_i]

methods = {"Integrated Gradients": "integrated_gradients", "Grad-CAM": "grad_cam"}
size = int(prep.tensor.shape[-1])
geo = views.tensor_geometry(size)
disp = (240, 240)
panels, rows = [], []
att = None if enc.attention is None else enc.attention[0, group]
if att is not None:
    ovl, _ = views.overlays(prep.view, att[None], geo, views.OverlayStyle(), size=disp)
    panels.append((ovl[0], f"attention, group {group}"))
for name, method in methods.items():
    amap = state.attribution(handle.key, image.key, ref_key, int(group), method,
                             int(steps) if method == "integrated_gradients" else 0, handle.model, prep.tensor,
                             ref_groups)
    shown = np.abs(amap)
    # attribution maps live on the input tensor's pixels: draw them as [1, S, S] "grids" on that view
    ovl, _ = views.overlays(prep.view, (shown / max(float(shown.max()), 1e-12))[None], geo,
                            views.OverlayStyle(cmap="inferno"), size=disp)
    panels.append((ovl[0], f"{name} (|attribution|)"))
    rho = float("nan") if att is None else rank_correlation(att, amap, absolute=True)
    rows.append({"method": name, "Spearman ρ with attention": rho,
                 "sum of attribution": float(amap.sum()), "max |attribution|": float(shown.max())})

cols = st.columns(len(panels) + 1)
cols[0].image(views.resize_rgb(ref_view, disp), caption=f"reference ({ref_key})")
for col, (img, cap) in zip(cols[1:], panels):
    col.image(img, caption=cap)
st.dataframe(pd.DataFrame(rows).set_index("method").style.format("{:.3g}"), width="stretch")
if att is None:
    st.info(f"The {handle.model.config.head} head has no attention map to correlate with.")
