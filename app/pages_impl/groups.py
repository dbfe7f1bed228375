"""Groups page: each group's attention over the image, the composite, per-group numbers, downloads."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app import state, widgets
from dgml_viz.appkit import analysis, views

handle: state.ModelHandle = st.session_state["_handle"]

st.header("Groups")
st.caption("Each group's spatial attention laid over the original image, and the composite "
           "(each pixel coloured by the group that attends to it most).")
style = widgets.style_controls("groups")

image = state.require_image()

prep = state.prepared(handle, image)
enc = state.encoded(handle, image)
k = handle.model.num_groups
if enc.attention is None:
    st.image(views.resize_rgb(image.rgb, views.display_size(image.rgb.shape[1], image.rgb.shape[0])),
             caption=image.name)
    st.info(f"The {handle.model.config.head} head has no spatial attention maps: nothing to overlay.")
    st.stop()

att = enc.attention[0]
ovl, comp = views.overlays(image.rgb, att, prep.geometry, style)
cols = st.columns(k + 2)
cols[0].image(views.resize_rgb(image.rgb, (comp.shape[1], comp.shape[0])), caption=image.name,
              width="stretch")
for g in range(k):
    cols[g + 1].image(ovl[g], caption=f"group {g}", width="stretch")
cols[k + 1].image(comp, caption="composite", width="stretch")

stats = analysis.group_stats(att, state.part_masks(handle, image), image.part_names)
table = pd.DataFrame(stats).set_index("group")
st.subheader("Per-group numbers")
st.dataframe(table.style.format(precision=3), width="stretch")
st.caption("entropy: of the attention map, normalised to [0, 1] (1 = uniform); peak_share: attention mass "
           "of the strongest cell" + ("; best_part_share / inside_parts: attention mass inside the best "
                                       "ground-truth part / inside any part." if image.part_masks is not None else "."))

fmt = st.radio("figure format", list(views.FIGURE_FORMATS), horizontal=True, key="groups_fmt")
MIME = {"png": "image/png", "pdf": "application/pdf", "svg": "image/svg+xml"}


def _figure_bytes() -> bytes:
    shown = views.resize_rgb(image.rgb, (comp.shape[1], comp.shape[0]))
    return views.groups_figure_bytes(shown, ovl, comp, fmt=fmt, cmap=style.cmap)


st.download_button(f"Download figure ({fmt.upper()})", data=_figure_bytes, file_name=f"groups.{fmt}",
                   mime=MIME[fmt], key="groups_download", on_click="ignore")
