"""``--amp`` (bf16 autocast on CUDA) reaches the forward of ``heatmaps`` and ``index``; on a CPU it changes nothing."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch

from dgml_viz import inference
from dgml_viz.cli import main


@pytest.fixture()
def autocast_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    calls: list[tuple[str, bool]] = []
    real = inference.autocast

    def spy(device: torch.device, enabled: bool):  # noqa: ANN202
        calls.append((device.type, enabled))
        return real(device, enabled)

    monkeypatch.setattr(inference, "autocast", spy)
    return calls


def test_run_batch_amp_is_a_no_op_on_the_cpu(ckpt: Path) -> None:
    from dgml_viz.model.checkpoint import load_checkpoint

    model = load_checkpoint(ckpt).eval()
    x = torch.randn(3, 3, 96, 96)
    a, b = inference.run_batch(model, x), inference.run_batch(model, x, amp=True)
    assert a.embedding.dtype == b.embedding.dtype == torch.float32
    assert torch.equal(a.embedding, b.embedding) and torch.equal(a.attention, b.attention)
    assert isinstance(inference.autocast(torch.device("cpu"), True), contextlib.nullcontext)


@pytest.mark.parametrize("command", ["heatmaps", "index"])
def test_amp_flag_reaches_the_forward(ckpt: Path, photo_crops: Path, tmp_path: Path,
                                      autocast_calls: list[tuple[str, bool]], command: str) -> None:
    def argv(out: str, *extra: str) -> list[str]:
        return [command, "--ckpt", str(ckpt), "--images", str(photo_crops), "--out", str(tmp_path / out),
                "--batch-size", "8", "--processes", "1", "--device", "cpu", *extra]

    main(argv("o"))  # the corrupt file makes heatmaps exit 2; both run every batch
    assert autocast_calls and set(autocast_calls) == {("cpu", False)}
    autocast_calls.clear()
    main(argv("o-amp", "--amp"))
    assert len(autocast_calls) == 5 and set(autocast_calls) == {("cpu", True)}  # 36 good files in 5 batches
    if command == "index":
        from dgml_viz.index.store import open_index

        a, b = open_index(tmp_path / "o"), open_index(tmp_path / "o-amp")
        np.testing.assert_array_equal(np.asarray(a.groups), np.asarray(b.groups))
