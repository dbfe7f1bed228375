"""Groups page: each group's attention over the image, the composite, per-group numbers, group health
(dead / duplicated groups over a set of images), downloads."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app import state, widgets
from dgml_viz.appkit import paths, sources, views
from dgml_viz.appkit.embeddings import GalleryIndex, gallery_health
from dgml_viz.appkit.settings import allowed_roots
from dgml_viz.errors import DgmlVizError
from dgml_viz.metrics.localisation import group_stats

handle: state.ModelHandle = st.session_state["_handle"]

#: images of a folder used for the group-health check (the Compare page embeds as many)
HEALTH_FOLDER_LIMIT = 400


@st.cache_resource(max_entries=8, show_spinner="Checking group health (once)...")
def _health(model_key: str, gallery_key: str, use_labels: bool, _gallery: GalleryIndex) -> object:
    return gallery_health(_gallery, use_labels=use_labels)


def health_section() -> None:
    """Dead / duplicated groups over a set of images (no part masks): the sidebar's folder when one
    is chosen, else the held-out demo set (its labels used only for a model trained on it)."""
    st.subheader("Group health")
    folder_text = st.session_state.get("img_folder", "") if st.session_state.get("img_source") == "folder" else ""
    try:
        if folder_text.strip():
            roots = allowed_roots()
            files = paths.list_images(paths.resolve_folder(folder_text, roots), roots, limit=HEALTH_FOLDER_LIMIT)
            if not files:
                return
            gallery, _ = state.folder_index(handle, files)
            where, use_labels = f"the {len(gallery)} images of the folder (no labels)", False
            key = "folder:" + "|".join(f"{p}:{p.stat().st_mtime_ns}" for p in files)
        else:
            gallery = state.demo_index(handle)
            use_labels = sources.trained_on_demo(getattr(handle.model, "meta", None))
            where = f"the {len(gallery)} held-out demo images" + (
                " and their classes" if use_labels else " (labels not used: the model was not trained on this "
                                                       "benchmark)")
            key = "demo:" + ":".join(map(str, state.demo_spec(handle)))
        health = _health(handle.key, key, use_labels, gallery)
    except DgmlVizError as exc:
        widgets.error_line(exc)
        return
    for line in health.reasons:
        st.warning(line)
    if not health.reasons:
        st.success(f"No dead, suspect or duplicated groups among the {health.num_groups}.")
    st.caption(f"Judged on {where}, from signals that need no part masks (dgml_viz.metrics.group_health): "
               "retrieval of each group's slice vs chance, whether its embedding and attention change with the "
               "image, and how much two groups share. " + " ".join(f"{n[0].upper()}{n[1:]}." for n in health.notes))


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
    health_section()
    st.stop()

att = enc.attention[0]
ovl, comp = views.overlays(image.rgb, att, prep.geometry, style)
cols = st.columns(k + 2)
cols[0].image(views.resize_rgb(image.rgb, (comp.shape[1], comp.shape[0])), caption=image.name,
              width="stretch")
for g in range(k):
    cols[g + 1].image(ovl[g], caption=f"group {g}", width="stretch")
cols[k + 1].image(comp, caption="composite", width="stretch")

stats = group_stats(att, state.part_masks(handle, image), image.part_names)
table = pd.DataFrame(stats).set_index("group")
st.subheader("Per-group numbers")
st.dataframe(table.style.format(precision=3), width="stretch")
st.caption("entropy: of the attention map, normalised to [0, 1] (1 = uniform); peak_share: attention mass "
           "of the strongest cell" + ("; best_part_share / inside_parts: attention mass inside the best "
                                       "ground-truth part / inside any part." if image.part_masks is not None else "."))

health_section()

fmt = st.radio("figure format", list(views.FIGURE_FORMATS), horizontal=True, key="groups_fmt")
MIME = {"png": "image/png", "pdf": "application/pdf", "svg": "image/svg+xml"}


def _figure_bytes() -> bytes:
    shown = views.resize_rgb(image.rgb, (comp.shape[1], comp.shape[0]))
    return views.groups_figure_bytes(shown, ovl, comp, fmt=fmt, cmap=style.cmap)


st.download_button(f"Download figure ({fmt.upper()})", data=_figure_bytes, file_name=f"groups.{fmt}",
                   mime=MIME[fmt], key="groups_download", on_click="ignore")
