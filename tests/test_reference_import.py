"""Reading reference-implementation files: formats, safety, one-line errors, ``dgml-viz info``.

Files are written the way XinyiXuXD/DGML-master writes them (``test_reference_support``).
Payload files are plain pickles that would run code if unpickled normally.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_reference_support import TRACE, RefNet, make_layer, randomise_norms, write_reference_file
from torch import nn

from dgml_viz.cli import main
from dgml_viz.errors import CheckpointError
from dgml_viz.model.reference import PickledRecord, import_reference_checkpoint, read_reference_file


@pytest.fixture(scope="module")
def googlenet_net() -> RefNet:
    import torchvision.models as tvm

    net = tvm.googlenet(weights=None, aux_logits=False, init_weights=False)
    trunk = nn.Sequential(*list(net.children())[:-3])
    randomise_norms(trunk)
    return RefNet(trunk, make_layer("LearnQ_fen", 1024, 4, 64, 8), "googlenet").eval()


OPT = {"arch": "googlenet", "group_name": "LearnQ_fen", "k": 4, "full_dim": 64, "reduction": 8,
       "dataset": "cars196", "n_epochs": 200, "epoch": 3, "best_epoch": 3, "tau": [100, 1000]}


@pytest.mark.parametrize("opt_kind,module_name,legacy,cuda", [
    ("cfgnode", None, False, False),
    ("cfgnode", "yacs.config", True, True),
    ("namespace", None, False, True),
    ("cfgnode", None, True, False),
])
def test_real_format_variants_load_without_running_code(tmp_path: Path, googlenet_net: RefNet, opt_kind: str,
                                                        module_name: str | None, legacy: bool, cuda: bool) -> None:
    TRACE["path"] = tmp_path / "code_ran"
    src = write_reference_file(tmp_path / "checkpoint.pth.tar", googlenet_net, OPT, opt_kind=opt_kind,
                               module_name=module_name, legacy=legacy, cuda=cuda)
    assert zipfile.is_zipfile(src) == (not legacy)
    ref = read_reference_file(src)
    assert not TRACE["path"].exists()
    assert ref.serialization == ("legacy" if legacy else "zip")
    assert ref.opt["k"] == 4 and ref.opt["tau"] == [100, 1000] and ref.opt["arch"] == "googlenet"
    assert ref.opt_class.endswith("CfgNode" if opt_kind == "cfgnode" else "argparse.Namespace")
    assert not any(k.startswith("module.") for k in ref.state_dict)
    assert all(t.device.type == "cpu" for t in ref.state_dict.values())
    recalls = ref.progress["Test"]["discriminative_e_recall"]["e_recall@1"]
    assert len(recalls) == 3 and all(isinstance(v, np.float64) for v in recalls)
    model, _ = import_reference_checkpoint(src)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out, att = googlenet_net(x)
        ours = model(x)
    torch.testing.assert_close(ours.groups, torch.nn.functional.normalize(out, dim=-1), atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.attention, att, atol=1e-4, rtol=0)


def test_info_describes_reference_file(tmp_path: Path, googlenet_net: RefNet,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    src = write_reference_file(tmp_path / "checkpoint.pth.tar", googlenet_net, OPT, epochs=4)
    assert main(["info", str(src)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backbone"] == "googlenet" and info["group_layer"] == "LearnQ_fen"
    assert info["k"] == 4 and info["full_dim"] == 64 and info["dim_per_group"] == 16 and info["reduction"] == 8
    assert info["n_epochs"] == 200 and info["epochs_logged"]["Test"] == 4
    ref = read_reference_file(src)
    recalls = [float(v) for v in ref.progress["Test"]["discriminative_e_recall"]["e_recall@1"]]
    best = info["best_metrics"]["Test"]["discriminative_e_recall/e_recall@1"]
    assert best["best"] == pytest.approx(max(recalls)) and best["entries"] == 4
    assert info["best_metrics"]["Train"]["Train/loss"]["best"] == pytest.approx(0.25)  # losses: the minimum


def _pickle_file(tmp_path: Path, obj: object, name: str) -> Path:
    """A torch zip whose data.pkl is an arbitrary pickle (what a hostile file looks like)."""
    path = tmp_path / name
    buf = io.BytesIO()
    torch.save({"state_dict": {}}, buf)
    buf.seek(0)
    with zipfile.ZipFile(buf) as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.namelist():
            data = pickle.dumps(obj, protocol=2) if item.endswith("data.pkl") else zin.read(item)
            zout.writestr(item, data)
    return path


class _System:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _Eval:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (eval, (self.cmd,))


class _Popen:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        import subprocess

        return (subprocess.Popen, (["sh", "-c", self.cmd],))


class Unknown:
    def __init__(self) -> None:
        self.x = 1


@pytest.mark.parametrize("payload,needle", [
    (lambda m: {"state_dict": {}, "opt": _System(f"touch {m}")}, "system"),
    (lambda m: {"state_dict": {}, "opt": _Eval(f"open('{m}', 'w')")}, "eval"),
    (lambda m: {"state_dict": {}, "opt": _Popen(f"touch {m}")}, "subprocess.Popen"),
    (lambda m: {"state_dict": {}, "opt": Unknown()}, "Unknown"),
])
@pytest.mark.parametrize("legacy", [False, True])
def test_payload_files_run_nothing_and_fail_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        payload, needle: str, legacy: bool) -> None:
    marker = tmp_path / "pwned"
    obj = payload(marker)
    if legacy:
        src = tmp_path / "evil.pth.tar"
        torch.save(obj, src, _use_new_zipfile_serialization=False)
    else:
        src = _pickle_file(tmp_path, obj, "evil.pth.tar")
    for cmd in (["convert", str(src), str(tmp_path / "o.pt")], ["info", str(src)]):
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err and "refused" in err
        assert "Weights only load failed" not in err
    assert not marker.exists() and not (tmp_path / "o.pt").exists()


def test_record_class_called_with_arguments_is_refused(tmp_path: Path) -> None:
    """A record name used as a *call* with arguments (REDUCE) instead of as data is refused."""
    import types

    mod = types.ModuleType("somewhere")
    exec("class CfgNode:\n    def __reduce__(self):\n        return (CfgNode, ('x',))\n", mod.__dict__)
    sys.modules["somewhere"] = mod
    try:
        src = _pickle_file(tmp_path, {"state_dict": {}, "opt": mod.CfgNode()}, "call.pth")
    finally:
        del sys.modules["somewhere"]
    with pytest.raises(CheckpointError, match="refused to call somewhere.CfgNode"):
        read_reference_file(src)


def _net_file(tmp_path: Path, net: RefNet, opt: dict, extra: dict[str, torch.Tensor] | None = None,
              drop: str | None = None) -> Path:
    src = write_reference_file(tmp_path / "c.pth.tar", net, opt)
    if extra or drop:
        obj = read_reference_file(src)
        state = {"module." + k: v for k, v in obj.state_dict.items() if k != drop}
        state.update(extra or {})
        torch.save({"state_dict": state, "opt": obj.opt}, src)
    return src


@pytest.mark.parametrize("case,needle", [
    ("extra", "unused tensor criterion.beta"),
    ("missing", "missing model.1.que_embedding.3.weight"),
    ("k", "unused tensor model.1.que_embedding.3.weight"),
    ("shape", "shape mismatch model.1.val_conv.weight"),
])
def test_every_tensor_is_accounted_for(tmp_path: Path, googlenet_net: RefNet, capsys: pytest.CaptureFixture[str],
                                       case: str, needle: str) -> None:
    opt = dict(OPT)
    extra, drop = None, None
    if case == "extra":
        extra = {"module.criterion.beta": torch.ones(100)}
    elif case == "missing":
        drop = "model.1.que_embedding.3.weight"
    elif case == "k":
        opt["k"] = 3  # the file holds 4 queries
        opt["full_dim"] = 48
    elif case == "shape":
        opt["full_dim"] = 128
    src = _net_file(tmp_path, googlenet_net, opt, extra, drop)
    assert main(["convert", str(src), str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "o.pt").exists()


def test_opt_less_state_dict_is_inferred_from_tensor_names(tmp_path: Path, googlenet_net: RefNet) -> None:
    src = tmp_path / "bare.pth"
    torch.save(nn.DataParallel(googlenet_net).state_dict(), src)
    ref = read_reference_file(src)
    spec = ref.spec()
    assert (spec.backbone, spec.group_layer, spec.k, spec.full_dim, spec.reduction) == (
        "googlenet", "LearnQ_fen", 4, 64, 8)
    assert not spec.from_opt


@pytest.mark.parametrize("content,needle", [(b"", "empty"), (b"PK\x03\x04garbage", "corrupt"),
                                            (b"not a checkpoint at all", "not a PyTorch checkpoint")])
def test_broken_files_fail_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes,
                                       needle: str) -> None:
    src = tmp_path / "x.pth.tar"
    src.write_bytes(content)
    assert main(["convert", str(src), str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_records_keep_their_data(tmp_path: Path, googlenet_net: RefNet) -> None:
    from dgml_viz.model.reference import load_reference_object

    src = write_reference_file(tmp_path / "c.pth.tar", googlenet_net, OPT)
    obj = load_reference_object(src)
    assert isinstance(obj["opt"], PickledRecord) and obj["opt"].attrs["__immutable__"] is False
    assert isinstance(obj["progress"]["Test"], PickledRecord) and obj["aux"] is None
