"""Compare queries: top-k neighbours in an indexed gallery, per-group contributions, two queries side by side."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, state, widgets
from dgml_viz.appkit import analysis, paths, views
from dgml_viz.appkit.settings import allowed_roots
from dgml_viz.errors import DgmlVizError

handle: state.ModelHandle = st.session_state["_handle"]
side_image = st.session_state.get("_image")

st.header("Compare queries")
st.caption("With K L2-normalised groups concatenated, the similarity of two images is "
           "sim = sum_g <f_g(q), f_g(n)> / K; each bar shows one group's term. Restricting retrieval to a "
           "subset S of groups averages over S instead.")

# ----------------------------------------------------------------------------- gallery
source = st.radio("gallery", ["held-out demo set", "folder"], horizontal=True, key="cmp_gallery")
index = None
try:
    if source == "held-out demo set":
        index = state.demo_index(handle)
    else:
        roots = allowed_roots()
        text = st.text_input("gallery folder", key="cmp_folder", help="allowed roots: " + ", ".join(map(str, roots)))
        if text.strip():
            folder = paths.resolve_folder(text, roots)
            files = paths.list_images(folder, roots, limit=400)
            if not files:
                st.warning(f"{folder}: no images found")
            else:
                index, skipped = state.folder_index(handle, files)
                if skipped:
                    st.warning(f"skipped {len(skipped)} unreadable file(s), e.g. {skipped[0]}")
except DgmlVizError as exc:
    widgets.error_line(exc)
if index is None:
    st.info("Choose a gallery (the held-out demo set, or a folder under an allowed root).")
    st.stop()
st.caption(f"gallery: {len(index)} images indexed with {handle.label}")

k_groups = handle.model.num_groups
style = widgets.style_controls("cmp")
c1, c2, c3 = st.columns([2, 1, 2])
use_side = c1.checkbox("query = the sidebar image", key="cmp_use_sidebar",
                       disabled=side_image is None)
q_index = c1.number_input(f"query (gallery index 0-{len(index) - 1})", 0, len(index) - 1, 0, 1, key="cmp_query",
                          disabled=use_side and side_image is not None)
top_k = c2.slider("top-k", 1, 10, 5, key="cmp_k")
chosen = c3.multiselect("groups used for retrieval", list(range(k_groups)), default=list(range(k_groups)),
                        key="cmp_groups", format_func=lambda g: f"group {g}")
if not chosen:
    st.warning("Select at least one group.")
    st.stop()

if use_side and side_image is not None:
    enc = state.encoded(handle, side_image)
    prep = state.prepared(handle, side_image)
    q_groups, q_att, q_view, q_name, exclude = enc.groups[0], (None if enc.attention is None else enc.attention[0]), \
        prep.view, side_image.name, None
else:
    qi = int(q_index)
    q_groups = index.groups[qi]
    q_att = None if index.attention is None else index.attention[qi]
    q_view, q_name, exclude = index.views[qi], index.names[qi], qi

hits = analysis.neighbours(q_groups, index, k=top_k, groups=chosen, exclude=exclude)
size = index.views.shape[1]
geo = views.tensor_geometry(size)
disp = (160, 160)


def _row(view: np.ndarray, att: np.ndarray | None) -> list[np.ndarray]:
    """Thumbnails of one row: the image, then (with attention) the composite and one overlay per group."""
    if att is None:
        return [views.resize_rgb(view, disp)]
    ovl, comp = views.overlays(view, att, geo, style, size=disp)
    return [views.resize_rgb(view, disp), comp, *ovl]


st.subheader("Neighbours")
labels = ["image"] + ([] if index.attention is None else ["composite"] + [f"group {g}" for g in range(k_groups)])
header = st.columns(len(labels) + 1)
for col, lab in zip(header[1:], labels):
    col.markdown(f"**{lab}**")
rows = [("query", q_view, q_att, q_name)] + [
    (f"#{r + 1}", index.views[h.index], None if index.attention is None else index.attention[h.index],
     f"{index.names[h.index]}  d={h.distance:.3f}  sim={h.similarity:.3f}") for r, h in enumerate(hits)]
for tag, view, att, caption in rows:
    cols = st.columns(len(labels) + 1)
    cols[0].markdown(f"**{tag}**  \n{caption}")
    for col, img in zip(cols[1:], _row(view, att)):
        col.image(img, width="stretch")

st.subheader("Per-group contribution to each similarity")
contrib = pd.DataFrame([h.contributions for h in hits], columns=[f"group {g}" for g in range(k_groups)],
                       index=[f"#{r + 1} {index.names[h.index]}" for r, h in enumerate(hits)])
charts.stacked_bars(contrib, "contribution to the similarity", key="cmp_contrib_chart",
                    colors=views.group_hex_colors(k_groups))
table = contrib.assign(similarity=[h.similarity for h in hits], distance=[h.distance for h in hits])
if (index.labels >= 0).all() and exclude is not None:
    table["same class"] = [bool(index.labels[h.index] == index.labels[exclude]) for h in hits]
st.dataframe(table.style.format(precision=3), width="stretch")

# ----------------------------------------------------------------------------- side by side
st.subheader("Two queries, group by group")
b_index = st.number_input(f"second query (gallery index 0-{len(index) - 1})", 0, len(index) - 1,
                          min(1, len(index) - 1), 1, key="cmp_query_b")
b = int(b_index)
per_group = analysis.group_similarities(q_groups, index.groups[b:b + 1])[0]
st.caption(f"A = {q_name}, B = {index.names[b]}: embedding similarity "
           f"{float(per_group.mean()):.3f} = mean of the per-group cosines below")
a_ovl = _row(q_view, q_att)
b_ovl = _row(index.views[b], None if index.attention is None else index.attention[b])
if q_att is None or index.attention is None:
    cols = st.columns(2)
    cols[0].image(a_ovl[0], caption="A")
    cols[1].image(b_ovl[0], caption="B")
    st.dataframe(pd.DataFrame({"cosine": per_group}, index=[f"group {g}" for g in range(k_groups)]))
else:
    for g in range(k_groups):
        cols = st.columns([1, 2, 2])
        cols[0].metric(f"group {g}", f"{per_group[g]:.3f}", help="cosine <f_g(A), f_g(B)>")
        cols[1].image(a_ovl[2 + g], caption=f"A, group {g}", width="stretch")
        cols[2].image(b_ovl[2 + g], caption=f"B, group {g}", width="stretch")
