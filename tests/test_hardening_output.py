"""Issue 12, output side: bad output folders, mathtext in names, huge images, killed runs, concurrent runs.

Every test here failed before its fix. Subprocess tests run the real CLI (``python -m dgml_viz.cli``) so
that kills and concurrency are real, not simulated.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage import data

from dgml_viz.cli import main

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}


def _photos(root: Path, names: list[str], side: int = 64) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    src = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    out = []
    for i, name in enumerate(names):
        img = src[i % len(src)]
        step = max(1, max(img.shape[:2]) // side)
        Image.fromarray(np.ascontiguousarray(img[::step, ::step])).save(root / name)
        out.append(root / name)
    return out


def _one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)
    return err


def _cli(*args: str, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "dgml_viz.cli", *args], env=ENV, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]


# --------------------------------------------------------------------------- 1. output folders checked up front
def _commands(ckpt: Path, imgs: Path, out: Path) -> dict[str, list[str]]:
    return {
        "heatmaps": ["heatmaps", "--ckpt", str(ckpt), "--images", str(imgs), "--out", str(out)],
        "gallery": ["gallery", "--ckpt", str(ckpt), "--images", str(imgs), "--out", str(out), "--dpi", "50"],
        "interpret": ["interpret", "--ckpt", str(ckpt), "--images", str(imgs), "--out", str(out),
                      "--num-images", "4"],
    }


@pytest.mark.parametrize("command", ["heatmaps", "gallery", "interpret"])
@pytest.mark.parametrize("where", ["is_a_file", "under_a_file"])
def test_out_that_cannot_be_a_folder(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str],
                                     command: str, where: str) -> None:
    imgs = tmp_path / "imgs"
    _photos(imgs, ["a.png"])
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder")
    out = blocker if where == "is_a_file" else blocker / "sub" / "dir"
    assert main(_commands(ckpt, imgs, out)[command]) == 2
    _one_line_error(capsys, f"dgml-viz {command}: error:", str(out))
    assert blocker.read_text() == "a file, not a folder"


def test_evaluate_out_that_is_a_folder_or_under_a_file(tmp_path: Path, ckpt: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "f").write_text("x")
    for out in (tmp_path / "dir", tmp_path / "f" / "m.json"):
        assert main(["evaluate", "--ckpt", str(ckpt), "--out", str(out)]) == 2
        _one_line_error(capsys, "dgml-viz evaluate: error:", str(out))


def test_train_run_dir_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    run_dir.write_text("x")
    assert main(["train", "--config", "synthetic", "--run-dir", str(run_dir), "train.epochs=1"]) == 2
    _one_line_error(capsys, "dgml-viz train: error:", str(run_dir))


def _probe_writes(folder: Path) -> bool:
    try:
        (folder / ".probe").write_text("")
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


def test_read_only_out_folder(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    imgs = tmp_path / "imgs"
    _photos(imgs, ["a.png"])
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if _probe_writes(ro):
            pytest.skip("running as root: a 0555 folder is writable (the check probes with a real file)")
        for command, args in _commands(ckpt, imgs, ro).items():
            assert main(args) == 2, command
            _one_line_error(capsys, str(ro), "not writable")
            assert main(_commands(ckpt, imgs, ro / "new")[command]) == 2, command
            _one_line_error(capsys, str(ro / "new"))
    finally:
        ro.chmod(0o755)


def test_output_check_probes_with_a_real_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writability check creates (and removes) a file: it does not trust os.access (root passes that)."""
    from dgml_viz.errors import DgmlVizError
    from dgml_viz.utils import outdir

    assert outdir.ensure_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert sorted(os.listdir(tmp_path / "a" / "b")) == []  # the probe is gone
    real_mkstemp = outdir.tempfile.mkstemp

    def refuse(*a: object, **k: object) -> object:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(outdir.tempfile, "mkstemp", refuse)
    with pytest.raises(DgmlVizError, match="not writable"):
        outdir.ensure_output_dir(tmp_path / "a" / "b")
    monkeypatch.setattr(outdir.tempfile, "mkstemp", real_mkstemp)


# --------------------------------------------------------------------------- 2. mathtext in user text
NASTY = [r"$\foo{$", "$x$", "a$b$c", r"\$", "$$", "50$ and 20$", r"$\frac{1}{0}$", "^_{}", r"a\$b$"]


def _draw(text: str, parse_math: bool) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 0.4), dpi=40)
    canvas = FigureCanvasAgg(fig)
    fig.text(0.01, 0.3, text, parse_math=parse_math)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


@pytest.mark.parametrize("text", NASTY)
def test_mathtext_escape_draws_the_literal_text(text: str) -> None:
    from dgml_viz.render.text import mathtext_escape

    assert np.array_equal(_draw(mathtext_escape(text), True), _draw(text, False))


@settings(max_examples=25, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab $\\{}^_")), max_size=12))
def test_mathtext_escape_any_text(text: str) -> None:
    from dgml_viz.render.text import mathtext_escape

    assert np.array_equal(_draw(mathtext_escape(text), True), _draw(text, False))


def test_gallery_with_dollar_names(tmp_path: Path, ckpt: Path) -> None:
    imgs = tmp_path / "imgs"
    _photos(imgs, [r"$\foo{$.jpg", "$x$.png"])
    gal = tmp_path / "gal"
    _photos(gal, [r"$\bar}$.png", "b$1$.png"])
    out = tmp_path / "out"
    assert main(["gallery", "--ckpt", str(ckpt), "--images", str(imgs), "--out", str(out), "--dpi", "50",
                 "--query", str(imgs / "$x$.png"), "--gallery-dir", str(gal), "--topk", "2"]) == 0
    for stem in ("gallery", "gallery_retrieval"):
        for ext in ("pdf", "svg", "png"):
            assert (out / f"{stem}.{ext}").stat().st_size > 0


def test_grid_figure_and_report_plots_with_dollar_labels(tmp_path: Path) -> None:
    from dgml_viz.render.figures import Row, grid_figure, save_figure
    from dgml_viz.report import plots

    p = np.zeros((8, 8, 3), np.uint8)
    fig = grid_figure([Row([p, p], label=r"$\foo{$", titles=["$a$", r"\$b"])], ["$x$", r"$\y{$"],
                      legend=[(r"$\g{$", np.array([255, 0, 0]))], colorbar="jet", colorbar_label="$a{$")
    save_figure(fig, tmp_path / "f", ["png"], 50)
    ci = {"estimate": 0.5, "low": 0.4, "high": 0.6}
    assert plots.per_class_figure({"classes": [r"$\c{$", "$d$"], "recall@1": [0.1, 0.2]})
    assert plots.comparison_figure({r"$\m{$": {"headline": {"recall@1": ci}}, "$n$": {"headline": {}}},
                                   ["recall@1"])
    assert plots.keypoint_figure({"part_names": [r"$\k{$", "b"], "distribution": [[0.5, 0.5]]})
    assert plots.localisation_figure({"mass": [[0.5, 0.5]], "share": [0.5], "share_ci": [ci], "pointing_ci": [ci],
                                      "chance": {"area_share": [0.5]}, "matched_part": [0]}, [r"$\p{$", "$q$"])
    assert plots.translation_figure({r"$\t{$": {"invariance": {
        f"translation_{m}": {"shifts": [0, 1], "embedding_cosine": [1, 0.9], "group_cosine": [[1], [0.9]]}
        for m in ("wrap", "pad")}}})


# --------------------------------------------------------------------------- 3. memory budget for huge images
def _huge_png(path: Path, side: int = 12000) -> None:
    import cv2

    img = np.full((side, side, 3), 245, np.uint8)
    for i in range(12):
        cv2.circle(img, (side // 2 + 300 * i - 1800, side // 3 + 200 * i), side // 10,
                   (40 + 15 * i, 200 - 10 * i, 90), -1)
    Image.fromarray(img).save(path, compress_level=9)


def test_huge_image_rendered_at_capped_size_within_memory(tmp_path: Path, ckpt: Path) -> None:
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    _huge_png(imgs / "huge.png")
    assert (imgs / "huge.png").stat().st_size < 2_000_000
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import resource, sys
        from dgml_viz.cli import main
        rc = main(["heatmaps", "--ckpt", {str(ckpt)!r}, "--images", {str(imgs)!r}, "--out", {str(out)!r},
                   "--workers", "1", "--format", "jpg"])
        # VmHWM is this process image's own peak; ru_maxrss would also count the RSS of the pytest
        # process it was forked from (Linux keeps the old mm's high-water mark across execve)
        hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
        print("PEAK_KB", int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        sys.exit(rc)
    """)
    res = subprocess.run([sys.executable, "-c", script], env=ENV, cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    peak_gb = int(res.stdout.split("PEAK_KB")[1].split()[0]) / 1024 ** 2
    assert peak_gb <= 2.5, peak_gb
    rec = json.loads((out / "manifest.jsonl").read_text())
    assert rec["status"] == "ok" and rec["size"] == [12000, 12000]  # the true size of the file
    from dgml_viz.render.panels import DEFAULT_MAX_RENDER_PIXELS

    w, h = Image.open(out / "huge.png" / "composite.jpg").size
    assert w * h <= DEFAULT_MAX_RENDER_PIXELS and w == h and w >= 0.99 * DEFAULT_MAX_RENDER_PIXELS ** 0.5


def test_capped_render_matches_a_render_of_the_shrunk_image(tmp_path: Path, ckpt: Path) -> None:
    """Below the cap nothing changes; above it the outputs equal those of the image shrunk first."""
    import cv2

    imgs = tmp_path / "imgs"
    (p,) = _photos(imgs, ["a.png"], side=400)
    w0, h0 = Image.open(p).size
    out_full, out_cap = tmp_path / "full", tmp_path / "cap"
    cap = (w0 * h0) // 4
    assert main(["heatmaps", "--ckpt", str(ckpt), "--images", str(imgs), "--out", str(out_full),
                 "--format", "png"]) == 0
    assert main(["heatmaps", "--ckpt", str(ckpt), "--images", str(imgs), "--out", str(out_cap),
                 "--format", "png", "--max-render-pixels", str(cap)]) == 0
    full = np.asarray(Image.open(out_full / "a.png" / "group0.png"))
    capped = np.asarray(Image.open(out_cap / "a.png" / "group0.png"))
    assert full.shape[:2] == (h0, w0)
    assert capped.shape[0] * capped.shape[1] <= cap and capped.shape[0] * capped.shape[1] > 0.9 * cap
    shrunk = cv2.resize(full, (capped.shape[1], capped.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.abs(shrunk.astype(int) - capped.astype(int)).mean() < 6  # same picture, smaller
    za, zb = np.load(out_full / "a.png" / "maps.npz"), np.load(out_cap / "a.png" / "maps.npz")
    assert np.allclose(za["attention"], zb["attention"], atol=1e-5)  # decoded in full below 2x the cap
    assert json.loads(str(zb["geometry"]))["original"] == [w0, h0]
    # --max-render-pixels 0 turns the cap off
    assert main(["heatmaps", "--ckpt", str(ckpt), "--images", str(imgs), "--out", str(tmp_path / "off"),
                 "--max-render-pixels", "0"]) == 0
    assert Image.open(tmp_path / "off" / "a.png" / "group0.jpg").size == (w0, h0)


def test_reduced_decode_keeps_true_size_and_orientation(tmp_path: Path) -> None:
    from dgml_viz.data.images import load_image, load_image_reduced

    img = np.ascontiguousarray(data.astronaut()[:, :400])  # 512 x 400 (h x w)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: displayed 512 wide, 400 high
    for name, kw in (("a.jpg", {"exif": exif.tobytes(), "quality": 95}), ("a.png", {})):
        Image.fromarray(img).save(tmp_path / name, **kw)
        full = load_image(tmp_path / name)
        small, size = load_image_reduced(tmp_path / name, target_pixels=full.shape[0] * full.shape[1] // 9)
        assert size == (full.shape[1], full.shape[0])
        assert small.shape[0] * small.shape[1] >= full.shape[0] * full.shape[1] // 9
        assert small.shape[0] < full.shape[0]  # really decoded smaller
        ref = np.asarray(Image.fromarray(full).resize((small.shape[1], small.shape[0]), Image.BOX))
        assert np.abs(ref.astype(int) - small.astype(int)).mean() < 8, name  # same picture, same orientation
        same, size2 = load_image_reduced(tmp_path / name, target_pixels=None)
        assert np.array_equal(same, full) and size2 == size


# --------------------------------------------------------------------------- 4. no temp files left behind
def test_atomic_leaves_nothing_on_keyboard_interrupt_and_sweep_keeps_foreign_files(tmp_path: Path) -> None:
    from dgml_viz.utils.atomic import atomic_path, is_temp_name, sweep_temp_files

    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "x.png") as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
    ours = [tmp_path / ".composite.png.ab_cd123.png", tmp_path / "s" / ".last_state.pt.0a1b2c3d.pt",
            tmp_path / ".log.csv.qwertyui.csv", tmp_path / ".README.zzzzzzzz.tmp"]
    foreign = [tmp_path / ".composite.png.ab_cd123.jpg", tmp_path / ".composite.png.abc.png",
               tmp_path / "composite.png.ab_cd123.png", tmp_path / ".bashrc", tmp_path / ".x.png.ABCDEFGH.png",
               tmp_path / "keep.png"]
    for p in ours + foreign:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x")
    assert all(is_temp_name(p.name) for p in ours) and not any(is_temp_name(p.name) for p in foreign)
    fresh = tmp_path / ".fresh.png.aaaaaaaa.png"  # made after the run began: not stale
    fresh.write_bytes(b"x")
    start = time.time()
    os.utime(fresh, (start + 5, start + 5))
    for p in ours:
        os.utime(p, (start - 60, start - 60))
    removed = sweep_temp_files(tmp_path, older_than=start)
    assert sorted(removed) == sorted(ours)
    assert all(p.exists() for p in foreign) and fresh.exists()


_KILL_SCRIPT = """
import os, sys, time
from pathlib import Path
import dgml_viz.utils.atomic as atomic
def slow(real):
    def rename(src, dst):
        if Path(dst).name == sys.argv[1]:
            Path(sys.argv[2]).write_text("in")
            time.sleep(600)  # killed here: the temp file (or staging folder) is written, not yet renamed
        real(src, dst)
    return rename
atomic.os.replace, atomic.os.rename = slow(os.replace), slow(os.rename)
from dgml_viz.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _kill_when(marker: Path, proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    t0 = time.time()
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() - t0 < 120, "the run never reached the write"
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.wait(timeout=60)


@pytest.mark.parametrize("folders", ["new", "existing"])
def test_sigkill_mid_write_then_next_run_sweeps(tmp_path: Path, ckpt: Path, folders: str) -> None:
    """Killed before publishing: a new image folder is staged whole in ``.a.png.<rand>.partial`` (renamed
    at once); into an existing folder each file has its own temp name. The next run sweeps both kinds."""
    imgs = tmp_path / "imgs"
    _photos(imgs, ["a.png", "b.png"])
    out = tmp_path / "out"
    if folders == "existing":  # e.g. a rerun without --resume over an earlier run's outputs
        for name in ("a.png", "b.png"):
            (out / name).mkdir(parents=True)
    args = ["heatmaps", "--ckpt", str(ckpt), "--images", str(imgs), "--out", str(out), "--format", "png"]
    marker = tmp_path / "marker"
    hook, prefix = ("a.png", ".a.png.") if folders == "new" else ("composite.png", ".composite.png.")
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, hook, str(marker), *args],
                            env=ENV, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _kill_when(marker, proc)
    assert proc.returncode == -signal.SIGKILL
    left = [p for p in out.rglob(".*") if p.name.startswith(prefix)]
    assert left, "the kill left no temp file: the test did not hit the window"
    if folders == "new":
        assert not (out / "a.png").exists()  # nothing of the image was published
        assert all(p.name.endswith(".partial") and (p / "composite.png").is_file() for p in left)
    for p in left:  # the leftovers are older than the next run
        os.utime(p, (time.time() - 5, time.time() - 5))
    assert main(args + ["--resume"]) == 0
    assert not [p for p in out.rglob(".*") if p.name != ".dgml-viz.lock"]
    assert (out / "a.png" / "composite.png").is_file() and (out / "b.png" / "composite.png").is_file()


def test_sigterm_mid_write_leaves_nothing(tmp_path: Path, ckpt: Path) -> None:
    imgs = tmp_path / "imgs"
    _photos(imgs, ["a.png"])
    out = tmp_path / "out"
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, "index.html", str(marker), "heatmaps", "--ckpt",
                             str(ckpt), "--images", str(imgs), "--out", str(out)],
                            env=ENV, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _kill_when(marker, proc, signal.SIGTERM)
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err
    assert not [p for p in out.rglob(".*") if p.name != ".dgml-viz.lock"]


# --------------------------------------------------------------------------- 5. a lock on the output folder
def _hold_lock(lock: Path) -> subprocess.Popen[str]:
    """Another process holding ``lock`` (filelock) until killed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, filelock; l = filelock.FileLock(sys.argv[1]); l.acquire(); "
                               "print('held', flush=True); time.sleep(600)", str(lock)],
        env=ENV, text=True, stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_two_concurrent_runs_into_one_out_lose_no_record(tmp_path: Path, ckpt: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _photos(a, [f"a{i}.png" for i in range(5)])
    _photos(b, [f"b{i}.png" for i in range(4)])
    out = tmp_path / "out"
    out.mkdir()
    # a third process holds the folder until both runs are up and contending, so they really overlap
    holder = _hold_lock(out / ".dgml-viz.lock")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    runs = []
    for src, log in zip((a, b), logs):
        with open(log, "w") as fh:
            runs.append(subprocess.Popen([sys.executable, "-m", "dgml_viz.cli", "heatmaps", "--ckpt", str(ckpt),
                                          "--images", str(src), "--out", str(out), "--workers", "1",
                                          "--lock-timeout", "300"], env=ENV, cwd=ROOT, stderr=fh))
    try:
        t0 = time.time()
        while not all("waiting for another dgml-viz run" in log.read_text() for log in logs):
            assert all(p.poll() is None for p in runs), [log.read_text()[-2000:] for log in logs]
            assert time.time() - t0 < 120
            time.sleep(0.1)
    finally:
        holder.kill()
        holder.wait()
    assert [p.wait(timeout=300) for p in runs] == [0, 0], [log.read_text()[-2000:] for log in logs]
    recs = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["path"] for r in recs) == sorted([f"a{i}.png" for i in range(5)] + [f"b{i}.png" for i in range(4)])
    assert all(r["status"] == "ok" for r in recs)
    page = (out / "index.html").read_text()
    assert all(r["path"] in page for r in recs)
    # --resume of either input now redoes nothing
    for src in (a, b):
        assert main(["heatmaps", "--ckpt", str(ckpt), "--images", str(src), "--out", str(out), "--resume"]) == 0
    again = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert again == recs


def test_second_run_refuses_when_lock_timeout_runs_out(tmp_path: Path, ckpt: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    imgs, out = tmp_path / "imgs", tmp_path / "out"
    _photos(imgs, ["a.png"])
    out.mkdir()
    holder = _hold_lock(out / ".dgml-viz.lock")
    try:
        for command, extra in (("heatmaps", []), ("gallery", ["--dpi", "50"])):
            t0 = time.time()
            assert main([command, "--ckpt", str(ckpt), "--images", str(imgs), "--out", str(out),
                         "--lock-timeout", "0.5", *extra]) == 2
            assert time.time() - t0 < 30
            _one_line_error(capsys, f"dgml-viz {command}: error:", str(out), "another dgml-viz run")
        assert not (out / "manifest.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    assert main(["heatmaps", "--ckpt", str(ckpt), "--images", str(imgs), "--out", str(out)]) == 0


def test_run_dir_sweep_removes_a_killed_trainers_temp_files_but_not_a_live_runs(tmp_path: Path) -> None:
    """train's run dir (``prepare_run_dir``): ``.last_state.pt.XXXXXXXX.pt`` of a SIGKILLed trainer goes,
    while nothing is swept as long as a live dgml-viz run holds a lock under the folder."""
    from dgml_viz.utils.outdir import prepare_run_dir

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    marker = tmp_path / "marker"
    script = ("import sys, time; from dgml_viz.utils.atomic import atomic_path\n"
              "with atomic_path(sys.argv[1]) as tmp:\n"
              "    tmp.write_bytes(b'state'); open(sys.argv[2], 'w').close(); time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(run_dir / "last_state.pt"), str(marker)],
                            env=ENV, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _kill_when(marker, proc)
    (left,) = [p for p in run_dir.iterdir() if p.name.startswith(".last_state.pt.")]
    os.utime(left, (time.time() - 5, time.time() - 5))
    sub = run_dir / "overlays"
    sub.mkdir()
    holder = _hold_lock(sub / ".dgml-viz.lock")  # e.g. a heatmaps run writing into the run dir
    try:
        prepare_run_dir(run_dir)
        assert left.exists()
    finally:
        holder.kill()
        holder.wait()
    prepare_run_dir(run_dir)
    assert not left.exists() and not (run_dir / "last_state.pt").exists()
