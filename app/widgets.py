"""Sidebar pickers (model, image) and the overlay style controls shared by the pages."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import state
from dgml_viz.appkit import paths, sources, views
from dgml_viz.appkit.settings import (MAX_CHECKPOINT_DEPTH, MAX_CHECKPOINTS, allowed_roots, checkpoint_dir,
                                      checkpoint_label, max_upload_bytes)
from dgml_viz.errors import DgmlVizError

IMAGE_SOURCES = ("held-out demo image", "sample photo", "upload an image", "folder")
IMAGE_TYPES = ["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp"]


def error_line(exc: BaseException) -> None:
    """Show an expected failure as one st.error line."""
    st.error(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


def _too_big(upload: object) -> bool:
    size = getattr(upload, "size", 0) or 0
    if size > max_upload_bytes():
        st.error(f"{getattr(upload, 'name', 'upload')}: file too large ({size / 2**20:.1f} MB > "
                 f"{max_upload_bytes() / 2**20:.0f} MB)")
        return True
    return False


def model_picker() -> state.ModelHandle:
    """Sidebar checkpoint choice; on any load failure shows one error line and falls back."""
    choices = state.checkpoint_choices()
    choice = st.sidebar.selectbox("Checkpoint", choices, key="ckpt_choice",
                                  format_func=lambda c: checkpoint_label(Path(c))
                                  if c not in (state.UPLOAD_LABEL, state.FALLBACK_LABEL) else c,
                                  help="dgml_viz checkpoints (*.pt) and the reference implementation's "
                                       "(*.pth.tar, *.pth; converted in memory) in DGML_VIZ_CHECKPOINT_DIR "
                                       f"and its subfolders (up to {MAX_CHECKPOINT_DEPTH} levels)")
    handle = None
    if choice == state.UPLOAD_LABEL:
        up = st.sidebar.file_uploader("Checkpoint file (.pt, or the reference's .pth.tar)",
                                      type=["pt", "pth", "pth.tar", "ckpt"], key="ckpt_upload")
        if up is not None and not _too_big(up):
            try:
                handle = state.model_from_upload(up.getvalue(), up.name, up.file_id)
            except DgmlVizError as exc:
                with st.sidebar:
                    error_line(exc)
    elif choice != state.FALLBACK_LABEL:
        try:
            handle = state.model_from_file(Path(choice))
        except DgmlVizError as exc:
            with st.sidebar:
                error_line(exc)
    if handle is None:
        handle = _default_handle(exclude=choice)
    st.sidebar.caption(f"**{handle.label}** — {handle.describe()}")
    if len(choices) - 1 >= MAX_CHECKPOINTS:  # choices end with the upload entry
        st.sidebar.caption(f"listing only the first {MAX_CHECKPOINTS} checkpoints found in {checkpoint_dir()}")
    return handle


#: how many other checkpoints are tried when the chosen one fails (a training folder can hold hundreds)
FALLBACK_TRIES = 8


def _default_handle(exclude: str) -> state.ModelHandle:
    tries = [c for c in state.checkpoint_choices() if c not in (state.UPLOAD_LABEL, state.FALLBACK_LABEL, exclude)]
    for c in tries[:FALLBACK_TRIES]:
        try:
            return state.model_from_file(Path(c))
        except DgmlVizError:
            continue
    return state.fallback_model()


def image_picker(handle: state.ModelHandle, where: st.delta_generator.DeltaGenerator | None = None,
                 key: str = "img") -> sources.SourceImage | None:
    """Pick an image (held-out demo set, sample photo, upload or allowed folder); None when none/invalid."""
    box = where if where is not None else st.sidebar
    kind = box.selectbox("Image", IMAGE_SOURCES, key=f"{key}_source")
    try:
        if kind == IMAGE_SOURCES[0]:
            n = len(state.demo_dataset(handle))
            idx = box.number_input(f"held-out index (0-{n - 1})", 0, n - 1, 0, 1, key=f"{key}_demo_index")
            return state.demo_image(handle, int(idx))
        if kind == IMAGE_SOURCES[1]:
            name = box.selectbox("photo (scikit-image)", sources.SAMPLE_PHOTOS, key=f"{key}_sample")
            return state.sample_photo(name)
        if kind == IMAGE_SOURCES[2]:
            up = box.file_uploader("image file", type=IMAGE_TYPES, key=f"{key}_upload")
            if up is None or _too_big(up):
                return None
            return _decode_upload(up.file_id, up.name, up.getvalue())
        roots = allowed_roots()
        text = box.text_input("folder", key=f"{key}_folder",
                              help="allowed roots: " + ", ".join(str(r) for r in roots))
        if not text.strip():
            return None
        folder = paths.resolve_folder(text, roots)
        files = paths.list_images(folder, roots)
        if not files:
            box.warning(f"{folder}: no images found")
            return None
        pick = box.selectbox("file", [str(p.relative_to(folder)) for p in files], key=f"{key}_file")
        return sources.folder_image(folder / pick)
    except DgmlVizError as exc:
        with box:
            error_line(exc)
        return None


@st.cache_resource(max_entries=8, show_spinner=False)
def _decode_upload(file_id: str, name: str, _data: bytes) -> sources.SourceImage:
    return sources.upload_image(_data, name, file_id)


def style_controls(key: str = "style", where: st.delta_generator.DeltaGenerator | None = None) -> views.OverlayStyle:
    """Overlay controls: alpha, colormap, normalisation, interpolation, contour."""
    box = where if where is not None else st
    c = box.columns(5)
    alpha = c[0].slider("alpha", 0.0, 1.0, 0.5, 0.05, key=f"{key}_alpha")
    cmap = c[1].selectbox("colormap", views.COLORMAPS, key=f"{key}_cmap")
    norm = c[2].selectbox("normalisation", views.NORMS, key=f"{key}_norm")
    interp = c[3].selectbox("interpolation", views.INTERPOLATIONS, key=f"{key}_interp")
    contour = c[4].checkbox("contour", key=f"{key}_contour")
    mass = c[4].slider("contour mass", 0.1, 0.9, 0.5, 0.1, key=f"{key}_mass", disabled=not contour)
    return views.OverlayStyle(alpha=float(alpha), cmap=cmap, norm=norm, interpolation=interp,
                              contour=bool(contour), contour_mass=float(mass))
