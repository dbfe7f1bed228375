"""dgml_viz Streamlit app: ``streamlit run app/main.py`` (or ``make app``).

A thin view over :mod:`dgml_viz`: the sidebar picks a checkpoint and an image,
the pages (``app/pages_impl/``) show groups, retrieval comparisons,
invariance checks and attributions.
"""
from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

from app import widgets  # noqa: E402

_PAGES = Path(__file__).resolve().parent / "pages_impl"

st.set_page_config(page_title="dgml_viz", page_icon=":material/grid_view:", layout="wide")

from dgml_viz.appkit.settings import serving_problem  # noqa: E402

_refusal = serving_problem(st.get_option("server.address"))
if _refusal:  # nothing is loaded or listed before this check
    st.error(_refusal)
    st.stop()

pages = [
    st.Page(str(_PAGES / "groups.py"), title="Groups", icon=":material/layers:", url_path="groups", default=True),
    st.Page(str(_PAGES / "compare.py"), title="Compare queries", icon=":material/compare:", url_path="compare"),
    st.Page(str(_PAGES / "invariance.py"), title="Invariance", icon=":material/shuffle:", url_path="invariance"),
    st.Page(str(_PAGES / "attributions.py"), title="Attributions", icon=":material/insights:",
            url_path="attributions"),
    st.Page(str(_PAGES / "training.py"), title="Training", icon=":material/monitoring:", url_path="training"),
]
page = st.navigation(pages)

st.sidebar.title("dgml_viz")
handle = widgets.model_picker()
st.session_state["_handle"] = handle
st.session_state["_image"] = widgets.image_picker(handle)
page.run()
