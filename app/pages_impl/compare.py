"""Compare queries: top-k neighbours in an indexed gallery, per-group contributions, two queries side by side.

Galleries: the held-out demo set or a folder (embedded in memory, at most 400 files), or an index
built by ``dgml-viz index`` (any size: memory-mapped, FAISS search, overlays from the stored maps).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, state, widgets
from dgml_viz.appkit import paths, views
from dgml_viz.appkit.embeddings import GalleryIndex
from dgml_viz.appkit.settings import allowed_roots
from dgml_viz.errors import DgmlVizError
from dgml_viz.index.search import Neighbour, group_similarities, neighbours

handle: state.ModelHandle = st.session_state["_handle"]
side_image = st.session_state.get("_image")

st.header("Compare queries")
st.caption("With K L2-normalised groups concatenated, the similarity of two images is "
           "sim = sum_g <f_g(q), f_g(n)> / K; each bar shows one group's term. Restricting retrieval to a "
           "subset S of groups averages over S instead.")

# ----------------------------------------------------------------------------- gallery
GALLERIES = ["held-out demo set", "folder", "index"]
OTHER_INDEX = "another folder..."


class MemoryGallery:
    """A gallery embedded in memory (:class:`GalleryIndex`): thumbnails are the model-input views."""

    def __init__(self, gi: GalleryIndex) -> None:
        self.gi, self.labels, self.num_groups = gi, gi.labels, int(gi.groups.shape[1])
        self.geo = views.tensor_geometry(gi.views.shape[1])

    def __len__(self) -> int:
        return len(self.gi)

    def name(self, i: int) -> str:
        return self.gi.names[i]

    def groups(self, i: int) -> np.ndarray:
        return self.gi.groups[i]

    def picture(self, i: int) -> tuple[np.ndarray, np.ndarray | None, object]:
        return self.gi.views[i], None if self.gi.attention is None else self.gi.attention[i], self.geo

    def neighbours(self, q: np.ndarray, k: int, groups: list[int], exclude: int | None) -> list[Neighbour]:
        return neighbours(q, self.gi.searcher, k=k, groups=groups, exclude=exclude)


class StoredGallery:
    """An on-disk index: FAISS search on the stored groups, overlays from the stored maps and geometry
    on the original files (no forward pass)."""

    def __init__(self, key: str, ix: object, roots: list) -> None:
        from pathlib import Path

        self.ix, self.key, self.roots, self.num_groups = ix, key, roots, int(ix.num_groups)
        self.searcher = state.index_searcher(key, ix)
        self.labels = state.index_folder_labels(key, ix)

    def __len__(self) -> int:
        return len(self.ix)

    def name(self, i: int) -> str:
        from pathlib import Path

        p = Path(self.ix.paths[i])
        return f"{p.parent.name}/{p.name}"

    def groups(self, i: int) -> np.ndarray:
        return np.array(self.ix.groups[i], dtype=np.float32)  # a writable copy of the memmap row

    def picture(self, i: int) -> tuple[np.ndarray, np.ndarray | None, object]:
        from pathlib import Path

        path = Path(self.ix.paths[i])
        att = None if self.ix.attention is None else np.asarray(self.ix.attention[i], dtype=np.float32)
        geo = self.ix.geometry(i)
        if not paths.inside(path.resolve(), self.roots):
            raise DgmlVizError(f"{path}: outside the allowed roots")
        return state.file_image(path).rgb, att, geo

    def neighbours(self, q: np.ndarray, k: int, groups: list[int], exclude: int | None) -> list[Neighbour]:
        return neighbours(q, self.searcher, k=k, groups=groups, exclude=exclude)


def _pick_index(roots: list) -> StoredGallery | None:
    """The index picker: indexes found under ``DGML_VIZ_INDEX_DIR``, or any folder under an allowed root."""
    from dgml_viz.appkit.settings import index_dir
    from dgml_viz.index.store import find_indexes

    found = [str(p) for p in find_indexes(index_dir())]
    pick = st.selectbox("index", found + [OTHER_INDEX], key="cmp_index_pick",
                        help="indexes under DGML_VIZ_INDEX_DIR (build one with `dgml-viz index`)")
    text = pick if pick != OTHER_INDEX else st.text_input(
        "index folder", key="cmp_index", help="allowed roots: " + ", ".join(map(str, roots)))
    if not text.strip():
        return None
    key, ix = state.open_index(paths.resolve_folder(text, roots))
    if not len(ix):
        raise DgmlVizError(f"{ix.root}: the index is empty")
    return StoredGallery(key, ix, roots)


source = st.radio("gallery", GALLERIES, horizontal=True, key="cmp_gallery")
gallery = None
try:
    roots = allowed_roots()
    if source == "held-out demo set":
        gallery = MemoryGallery(state.demo_index(handle))
    elif source == "folder":
        text = st.text_input("gallery folder", key="cmp_folder", help="allowed roots: " + ", ".join(map(str, roots)))
        if text.strip():
            folder = paths.resolve_folder(text, roots)
            files = paths.list_images(folder, roots, limit=400)
            if not files:
                st.warning(f"{folder}: no images found")
            else:
                mem, skipped = state.folder_index(handle, files)
                gallery = MemoryGallery(mem)
                if skipped:
                    st.warning(f"skipped {len(skipped)} unreadable file(s), e.g. {skipped[0]}")
    else:
        gallery = _pick_index(roots)
except DgmlVizError as exc:
    widgets.error_line(exc)
if gallery is None:
    st.info("Choose a gallery (the held-out demo set, a folder under an allowed root, or an index built by "
            "`dgml-viz index`).")
    st.stop()
stored = isinstance(gallery, StoredGallery)
if stored:
    st.caption(f"index: {len(gallery)} images, built with {gallery.ix.checkpoint['path']} "
               f"(sha256 {gallery.ix.sha256[:12]}); neighbours by FAISS, overlays from the stored maps")
else:
    st.caption(f"gallery: {len(gallery)} images indexed with {handle.label}")

k_groups = gallery.num_groups
style = widgets.style_controls("cmp")
c1, c2, c3 = st.columns([2, 1, 2])
use_side = c1.checkbox("query = the sidebar image", key="cmp_use_sidebar",
                       disabled=side_image is None)
q_index = c1.number_input(f"query (gallery index 0-{len(gallery) - 1})", 0, len(gallery) - 1, 0, 1, key="cmp_query",
                          disabled=use_side and side_image is not None)
top_k = c2.slider("top-k", 1, 10, 5, key="cmp_k")
chosen = c3.multiselect("groups used for retrieval", list(range(k_groups)), default=list(range(k_groups)),
                        key="cmp_groups", format_func=lambda g: f"group {g}")
if not chosen:
    st.warning("Select at least one group.")
    st.stop()

try:
    if use_side and side_image is not None:
        q_handle = state.index_model(gallery.ix) if stored else handle
        enc = state.encoded(q_handle, side_image)
        prep = state.prepared(q_handle, side_image)
        q_att = None if enc.attention is None else enc.attention[0]
        q_groups, q_name, exclude = enc.groups[0], side_image.name, None
        q_pic = (side_image.rgb, q_att, prep.geometry) if stored else (prep.view, q_att, gallery.geo)
    else:
        qi = int(q_index)
        q_groups, q_name, exclude = gallery.groups(qi), gallery.name(qi), qi
        q_pic = gallery.picture(qi)
    hits = gallery.neighbours(q_groups, top_k, chosen, exclude)
except DgmlVizError as exc:
    widgets.error_line(exc)
    st.stop()
disp_side = 160


def _row(pic: tuple[np.ndarray, np.ndarray | None, object]) -> list[np.ndarray]:
    """Thumbnails of one row: the image, then (with attention) the composite and one overlay per group."""
    rgb, att, geo = pic
    disp = views.display_size(rgb.shape[1], rgb.shape[0], disp_side) if stored else (disp_side, disp_side)
    if att is None:
        return [views.resize_rgb(rgb, disp)]
    ovl, comp = views.overlays(rgb, att, geo, style, size=disp)
    return [views.resize_rgb(rgb, disp), comp, *ovl]


def _picture(i: int) -> tuple[np.ndarray, np.ndarray | None, object] | None:
    try:
        return gallery.picture(i)
    except DgmlVizError as exc:
        widgets.error_line(exc)
        return None


st.subheader("Neighbours")
has_att = q_pic[1] is not None
labels = ["image"] + ([] if not has_att else ["composite"] + [f"group {g}" for g in range(k_groups)])
header = st.columns(len(labels) + 1)
for col, lab in zip(header[1:], labels):
    col.markdown(f"**{lab}**")
rows = [("query", q_pic, q_name)] + [
    (f"#{r + 1}", _picture(h.index), f"{gallery.name(h.index)}  d={h.distance:.3f}  sim={h.similarity:.3f}")
    for r, h in enumerate(hits)]
for tag, pic, caption in rows:
    cols = st.columns(len(labels) + 1)
    cols[0].markdown(f"**{tag}**  \n{caption}")
    if pic is None:
        continue
    for col, img in zip(cols[1:], _row(pic)):
        col.image(img, width="stretch")

st.subheader("Per-group contribution to each similarity")
contrib = pd.DataFrame([h.contributions for h in hits], columns=[f"group {g}" for g in range(k_groups)],
                       index=[f"#{r + 1} {gallery.name(h.index)}" for r, h in enumerate(hits)])
charts.stacked_bars(contrib, "contribution to the similarity", key="cmp_contrib_chart",
                    colors=views.group_hex_colors(k_groups))
table = contrib.assign(similarity=[h.similarity for h in hits], distance=[h.distance for h in hits])
if (gallery.labels >= 0).all() and exclude is not None:
    table["same class"] = [bool(gallery.labels[h.index] == gallery.labels[exclude]) for h in hits]
st.dataframe(table.style.format(precision=3), width="stretch")

# ----------------------------------------------------------------------------- side by side
st.subheader("Two queries, group by group")
b_index = st.number_input(f"second query (gallery index 0-{len(gallery) - 1})", 0, len(gallery) - 1,
                          min(1, len(gallery) - 1), 1, key="cmp_query_b")
b = int(b_index)
per_group = group_similarities(q_groups, gallery.groups(b)[None])[0]
st.caption(f"A = {q_name}, B = {gallery.name(b)}: embedding similarity "
           f"{float(per_group.mean()):.3f} = mean of the per-group cosines below")
b_pic = _picture(b)
a_ovl = _row(q_pic)
b_ovl = _row(b_pic) if b_pic is not None else a_ovl[:1]
if q_pic[1] is None or b_pic is None or b_pic[1] is None:
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
