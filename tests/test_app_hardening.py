"""The app under bad input and a non-loopback address: one st.error, no exception, nothing loaded."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from test_app import APP, set_app_env, write_checkpoints


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ckpts = write_checkpoints(tmp_path / "ckpts")
    allowed = tmp_path / "allowed"
    (allowed / "imgs").mkdir(parents=True)
    set_app_env(monkeypatch, ckpts["demo"].parent, allowed)
    return allowed


@pytest.mark.parametrize("text", ["imgs\x00", "im\ngs", "\x7f"])
def test_control_characters_in_folder_fields_are_one_error(env: Path, text: str) -> None:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.sidebar.selectbox(key="img_source").set_value("folder").run()
    at.sidebar.text_input(key="img_folder").input(str(env) + "/" + text).run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1 and "control character" in at.error[0].value


@pytest.mark.parametrize("address", ["0.0.0.0", "", "192.168.0.10"])
def test_non_loopback_address_is_refused(env: Path, monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    monkeypatch.delenv("DGML_VIZ_ALLOW_REMOTE", raising=False)
    old = st_config.get_option("server.address")
    st_config.set_option("server.address", address or None)
    try:
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.run()
        assert not at.exception
        assert len(at.error) == 1 and "refusing to serve" in at.error[0].value
        assert not at.sidebar.selectbox  # nothing listed, nothing loaded
        monkeypatch.setenv("DGML_VIZ_ALLOW_REMOTE", "1")
        at = AppTest.from_file(str(APP), default_timeout=120)
        at.run()
        assert not at.exception and not at.error
    finally:
        st_config.set_option("server.address", old)
