"""Checkpoint round trips, safety against pickled code, and one-line errors."""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from dgml_viz.cli import main
from dgml_viz.errors import CheckpointError
from dgml_viz.model import create_model
from dgml_viz.model.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    load_checkpoint_bytes,
    read_checkpoint_info,
    save_checkpoint,
)


def _model(head: str = "attentive"):
    return create_model("small_cnn", head=head, groups=3, dim=48, width=8).eval()


@pytest.mark.parametrize("head", ["attentive", "gap", "multi_linear", "gate", "channel"])
def test_round_trip_is_bit_exact(tmp_path: Path, head: str) -> None:
    model = _model(head)
    # make BN statistics non-trivial
    model.train()(torch.randn(4, 3, 32, 32))
    model.eval()
    transform = {"size": 96, "resize": 110, "mean": [0.5] * 3, "std": [0.25] * 3, "mode": "center_crop"}
    path = save_checkpoint(model, tmp_path / "m.pt", transform=transform, class_names=["a", "b"],
                           metrics={"recall@1": torch.tensor(0.75)}, seed=3)
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b), k
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x).embedding, loaded(x).embedding)
    assert loaded.transform == transform
    assert loaded.class_names == ["a", "b"]
    assert loaded.metrics == {"recall@1": 0.75}
    assert loaded.meta == {"seed": 3}
    info = read_checkpoint_info(path)
    assert info["format_version"] == FORMAT_VERSION and info["config"]["head"] == head
    assert "state_dict" not in info


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    path = tmp_path / "m.pt"
    save_checkpoint(model, path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(model, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


class _Payload:
    """Unpickling this runs code (writes a marker file)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_payload_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": "dgml_viz.checkpoint", "format_version": 1, "config": {}, "state_dict": {},
               "meta": _Payload(str(marker))}
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "refused" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()
    # the reference importer must not run it either
    from dgml_viz.model.reference import read_reference_file

    with pytest.raises(CheckpointError):
        read_reference_file(path)
    assert not marker.exists()


def test_error_paths_are_one_line(tmp_path: Path) -> None:
    good = save_checkpoint(_model(), tmp_path / "good.pt")
    data = good.read_bytes()
    cases = {
        "missing": (tmp_path / "nope.pt", "no such file"),
        "empty": (tmp_path / "empty.pt", "empty"),
        "text": (tmp_path / "text.pt", "not a checkpoint"),
        "truncated": (tmp_path / "trunc.pt", "truncated or corrupt"),
    }
    cases["empty"][0].write_bytes(b"")
    cases["text"][0].write_text("hello, not a model")
    cases["truncated"][0].write_bytes(data[: len(data) // 2])
    for name, (path, needle) in cases.items():
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        msg = str(err.value)
        assert needle in msg and str(path) in msg and "\n" not in msg, (name, msg)


def test_newer_format_version_and_bare_state_dict(tmp_path: Path) -> None:
    path = save_checkpoint(_model(), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(tmp_path / "new.pt")
    torch.save(_model().state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="not a dgml_viz checkpoint"):
        load_checkpoint(tmp_path / "bare.pt")


def test_mismatched_shapes_named(tmp_path: Path) -> None:
    path = save_checkpoint(_model(), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["head.value.weight"] = torch.zeros(5, 32, 1, 1)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "bad.pt")
    assert "head.value.weight" in str(err.value) and "[5, 32, 1, 1]" in str(err.value)


def test_upload_bytes_errors_use_given_name() -> None:
    with pytest.raises(CheckpointError) as err:
        load_checkpoint_bytes(b"garbage", name="upload.pt")
    assert str(err.value).startswith("upload.pt:")


def test_cli_info_and_error_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = save_checkpoint(_model(), tmp_path / "m.pt")
    assert main(["info", str(path)]) == 0
    assert '"head": "attentive"' in capsys.readouterr().out
    (tmp_path / "bad.pt").write_text("x")
    assert main(["info", str(tmp_path / "bad.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.pt" in err[0] and "Traceback" not in err[0]
