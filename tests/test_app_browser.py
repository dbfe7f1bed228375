"""Real-browser test: start `streamlit run app/main.py` on a free local port and open every page
in headless Chromium (selenium); wait for the images, check there is no error box, save screenshots.

Screenshots go to ``$DGML_VIZ_TEST_ARTIFACTS`` or ``test-artifacts/app/`` (git-ignored).
The app opens the shipped ``checkpoints/`` (the main job: demo model + baselines) when
``checkpoints/demo.pt`` exists, else tiny checkpoints written to a temp folder; set
``DGML_VIZ_TEST_CHECKPOINT_DIR`` (a folder with ``demo.pt``) to screenshot other models.
Skipped (with the reason) only when Chromium / chromedriver / selenium are absent.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from test_app import write_checkpoints

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PAGES = {  # url path -> (header, least number of images once rendered)
    "": ("Groups", 5),
    "compare": ("Compare queries", 30),
    "invariance": ("Invariance", 8),
    "attributions": ("Attributions", 4),
}

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("headless Chromium is absent (/usr/bin/chromium and /usr/bin/chromedriver; "
                "apt-get install chromium chromium-driver)", allow_module_level=True)
selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _artifacts() -> Path:
    out = Path(os.environ.get("DGML_VIZ_TEST_ARTIFACTS") or ROOT / "test-artifacts" / "app")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("browser")
    shipped = ROOT / "checkpoints"
    real = os.environ.get("DGML_VIZ_TEST_CHECKPOINT_DIR") or (str(shipped) if (shipped / "demo.pt").exists() else None)
    folder = Path(real) if real else tmp / "ckpts"
    if not real:
        write_checkpoints(folder)
    port = _free_port()
    env = dict(os.environ, DGML_VIZ_CHECKPOINT_DIR=str(folder), DGML_VIZ_DEFAULT_CKPT=str(folder / "demo.pt"),
               DGML_VIZ_ALLOWED_ROOTS=str(tmp), OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    log = open(tmp / "streamlit.log", "w+b")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"streamlit did not start: {log.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.seek(0)
        shutil.copyfile(tmp / "streamlit.log", _artifacts() / "streamlit.log")
        log.close()


@pytest.fixture(scope="module")
def driver() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="dgml-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--window-size=1600,2200"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _rendered(drv: webdriver.Chrome, header: str, min_images: int) -> bool:
    """True once the script finished: header shown, no 'running' status, enough loaded images."""
    if drv.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'):
        return True  # fail fast; the test reports it
    heads = [h.text for h in drv.find_elements(By.CSS_SELECTOR, "h2")]
    if not any(header in h for h in heads):
        return False
    if drv.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]'):
        return False
    loaded = drv.execute_script(
        "return Array.from(document.querySelectorAll('[data-testid=\"stImage\"] img, [data-testid=\"stFullScreenFrame\"] img'))"
        ".filter(i => i.complete && i.naturalWidth > 0).length")
    return int(loaded) >= min_images


@pytest.mark.parametrize("path", list(PAGES))
def test_page_renders_without_errors(server: str, driver: webdriver.Chrome, path: str) -> None:
    header, min_images = PAGES[path]
    driver.get(f"{server}/{path}")
    try:
        WebDriverWait(driver, 90, poll_frequency=0.5).until(lambda d: _rendered(d, header, min_images))
    finally:
        time.sleep(0.5)  # let the last images paint before the screenshot
        driver.save_screenshot(str(_artifacts() / f"{path or 'groups'}.png"))
    exceptions = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert not exceptions, exceptions[0].text[:500]
    errors = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stAlertContentError"]')
    assert not errors, errors[0].text
    assert header in driver.title or any(header in h.text for h in driver.find_elements(By.CSS_SELECTOR, "h2"))


def test_figure_download_from_the_groups_page(server: str, driver: webdriver.Chrome, tmp_path: Path) -> None:
    """Clicking the download button runs the deferred figure callable and delivers a real PNG."""
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    driver.get(f"{server}/")
    WebDriverWait(driver, 90, poll_frequency=0.5).until(lambda d: _rendered(d, "Groups", 5))
    # the page's images can be drawn before the script reaches the download button: wait for it too
    buttons = '[data-testid="stDownloadButton"] button'
    WebDriverWait(driver, 60, poll_frequency=0.5).until(lambda d: d.find_elements(By.CSS_SELECTOR, buttons))
    button = driver.find_element(By.CSS_SELECTOR, buttons)
    button.click()
    target = tmp_path / "groups.png"
    WebDriverWait(driver, 60, poll_frequency=0.5).until(lambda d: target.exists() and target.stat().st_size > 0)
    assert target.read_bytes().startswith(b"\x89PNG")
    assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
