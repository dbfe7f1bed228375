"""The index builder's decode schedules: a CPU model whose forward dwarfs decoding gets its decoding in the
gaps (no decode thread beside the forward), a light one or a GPU model overlapped; both give the same rows."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dgml_viz.errors import ImageError
from dgml_viz.index import builder
from dgml_viz.index.builder import build_index
from dgml_viz.index.store import open_index

TRANSFORM = {"size": 16, "resize": 16, "mean": [0.5] * 3, "std": [0.25] * 3, "mode": "full"}


@pytest.fixture()
def files(tmp_path: Path) -> list[tuple[Path, tuple[int, int]]]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(11):
        p = tmp_path / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(p)
        out.append((p, (p.stat().st_size, p.stat().st_mtime_ns)))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    return out[:5] + [(bad, (9, 0))] + out[5:]


class _Probe:
    """Counts decodes in flight (wrapping ``prepare_image``) and records, per forward, how many were."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, decode_s: float) -> None:
        self.lock, self.running, self.seen = threading.Lock(), 0, []
        real = builder.prepare_image

        def prepare(*a, **k):  # noqa: ANN002,ANN003
            with self.lock:
                self.running += 1
            try:
                end = time.thread_time() + decode_s
                while time.thread_time() < end:  # CPU, as a real decode (the schedule is chosen on CPU time)
                    pass
                return real(*a, **k)
            finally:
                with self.lock:
                    self.running -= 1

        monkeypatch.setattr(builder, "prepare_image", prepare)

    def forward(self, seconds: float) -> None:
        time.sleep(seconds / 2)
        self.seen.append(self.running)
        time.sleep(seconds / 2)


def _run(decoder: builder._Decoder, probe: _Probe, forward_s: float) -> list[tuple[str, object]]:
    got = []
    for batch in decoder.batches():
        got += [(p.name, r if isinstance(r, ImageError) else r[0]) for p, _, r in batch]
        t0 = time.perf_counter()
        probe.forward(forward_s)
        decoder.choose(time.perf_counter() - t0, len(batch))
    return got


@pytest.mark.parametrize("heavy", [True, False])
def test_schedule_follows_the_forward_cost(files: list, monkeypatch: pytest.MonkeyPatch, heavy: bool) -> None:
    probe = _Probe(monkeypatch, decode_s=0.0 if heavy else 0.04)  # light: a batch of 4 decodes for >= 80 ms
    decoder = builder._Decoder(files, TRANSFORM, workers=2, batch_size=4, max_pixels=None, overlap=None)
    got = _run(decoder, probe, forward_s=0.3 if heavy else 0.1)
    assert decoder.overlap is (not heavy)
    assert [n for n, _ in got] == [p.name for p, _ in files]  # input order, every file once
    assert isinstance(dict(got)["bad.png"], ImageError)
    if heavy:  # phased: nothing decodes while a forward runs
        assert probe.seen == [0, 0, 0]
    else:  # overlapped: the next batch decodes during the forward (not during the first, nor the last)
        assert probe.seen[0] == 0 and max(probe.seen[1:-1]) > 0 and probe.seen[-1] == 0


def test_a_gpu_model_always_overlaps(files: list, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = _Probe(monkeypatch, decode_s=0.08)  # a batch of 4 on 2 threads: >= 160 ms of decoding
    decoder = builder._Decoder(files, TRANSFORM, workers=2, batch_size=4, max_pixels=None, overlap=True)
    _run(decoder, probe, forward_s=0.2)  # sampled 100 ms into each forward
    assert decoder.overlap is True and probe.seen[0] > 0 and probe.seen[-1] == 0


def test_both_schedules_store_the_same_rows(ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_index import write_images

    write_images(tmp_path / "imgs", per_class=2, classes=6)
    rows = {}
    for share in (0.0, 1e9):  # 0: always overlapped; 1e9: always phased
        monkeypatch.setattr(builder, "PHASED_SHARE", share)
        build_index(ckpt, tmp_path / "imgs", tmp_path / f"ix{share}", batch_size=5, workers=2, progress=False)
        ix = open_index(tmp_path / f"ix{share}")
        rows[share] = (list(ix.paths), np.array(ix.groups), np.array(ix.attention), np.array(ix.info))
    a, b = rows.values()
    assert a[0] == b[0] and all(np.array_equal(x, y) for x, y in zip(a[1:], b[1:]))


def test_checkpoint_hash_is_the_file_hash(ckpt: Path, tmp_path: Path) -> None:
    import hashlib

    from test_index import write_images

    write_images(tmp_path / "imgs", per_class=1, classes=2)
    build_index(ckpt, tmp_path / "imgs", tmp_path / "ix", progress=False)
    assert open_index(tmp_path / "ix").sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
