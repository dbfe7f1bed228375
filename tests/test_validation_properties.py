"""Property tests (hypothesis): whatever a checkpoint config, transform or training override
holds, loading/validating ends in the model or one of the project's one-line errors —
never another exception, never a multi-line message."""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dgml_viz.errors import DgmlVizError
from dgml_viz.model.checkpoint import load_checkpoint
from dgml_viz.train import load_config
from dgml_viz.validation import check_transform

#: values a hand-edited or corrupted file may hold
ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 64, 2 ** 64), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.lists(st.integers(-5, 300), max_size=4),
    st.lists(st.floats(allow_nan=True), max_size=4), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
#: plausible-but-edge values for the model fields (small enough to build quickly when valid)
MODEL_FIELDS = {
    "backbone": st.sampled_from(["small_cnn", "nope", "", "resnet18", 3]),
    "head": st.sampled_from(["attentive", "gap", "multi_linear", "gate", "channel", "x", None]),
    "groups": st.one_of(st.integers(-2, 300), ANY_VALUE),
    "dim": st.one_of(st.integers(-2, 70000), st.just(2 ** 40), ANY_VALUE),
    "reduction": st.one_of(st.integers(-1, 70000), ANY_VALUE),
    "freeze_bn": st.one_of(st.booleans(), ANY_VALUE),
    "backbone_kwargs": st.one_of(st.fixed_dictionaries({"width": st.integers(-8, 10 ** 7)}),
                                 st.dictionaries(st.text(max_size=6), ANY_VALUE, max_size=2), ANY_VALUE),
}
TRANSFORM_FIELDS = {
    "size": st.one_of(st.integers(-5, 300_000), ANY_VALUE),
    "resize": st.one_of(st.integers(-5, 300_000), ANY_VALUE),
    "mean": st.one_of(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=4), ANY_VALUE),
    "std": st.one_of(st.lists(st.floats(-1, 2), min_size=3, max_size=3), ANY_VALUE),
    "mode": st.one_of(st.sampled_from(["center_crop", "full", "zoom"]), ANY_VALUE),
}


def _one_line(exc: DgmlVizError) -> None:
    assert "\n" not in str(exc) and str(exc).strip(), repr(exc)


@pytest.fixture(scope="module")
def raw(ckpt: Path) -> dict[str, Any]:
    return torch.load(ckpt, weights_only=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.dictionaries(st.sampled_from(sorted(MODEL_FIELDS)), st.none(), min_size=1, max_size=3),
       data=st.data())
def test_any_model_config_loads_or_fails_in_one_line(raw: dict[str, Any], tmp_path_factory, edits, data) -> None:
    payload = copy.deepcopy(raw)
    for key in edits:
        payload["config"][key] = data.draw(MODEL_FIELDS[key], label=key)
    path = tmp_path_factory.mktemp("h") / "edited.pt"
    torch.save(payload, path)
    try:
        model = load_checkpoint(path)
    except DgmlVizError as exc:
        _one_line(exc)
        assert str(path) in str(exc)
    else:  # accepted: then it really is the model described, with the file's weights
        assert model.config.to_dict() == payload["config"]


@settings(max_examples=150, deadline=None)
@given(fields=st.fixed_dictionaries({}, optional=TRANSFORM_FIELDS))
def test_any_transform_is_normalised_or_refused_in_one_line(fields: dict[str, Any]) -> None:
    try:
        t = check_transform(fields)
    except DgmlVizError as exc:
        _one_line(exc)
    else:
        assert 8 <= t["size"] <= 4096 and 8 <= t["resize"] <= 8192 and t["mode"] in ("center_crop", "full")
        assert len(t["mean"]) == len(t["std"]) == 3 and all(math.isfinite(v) for v in t["mean"] + t["std"])
        assert min(t["std"]) > 0


OVERRIDE_KEYS = ["model.groups", "model.dim", "model.reduction", "model.head", "model.freeze_bn",
                 "model.backbone_kwargs.width", "train.lr", "train.lr_backbone", "train.lr_query", "train.margin",
                 "train.gamma", "train.epochs", "train.seed", "train.device", "train.lr_steps", "train.amp",
                 "train.weight_decay.query", "train.time_budget_s", "data.size", "data.resize", "data.mean",
                 "data.crop_scale", "eval.ks", "train.loss", "output.dir", "train.nope", "nope"]
RAW_TEXT = st.one_of(
    st.sampled_from(["0", "-1", "1e-5", "-5", "fast", "abc", "[]", "[0]", "[1, 2]", "null", "true", "cuda:7",
                     "cuda", "gpu", "{a: 1}", "nan", ".inf", "1e400", "2**40", "'3'", "[0.5, 0.1]", ""]),
    st.integers(-10, 10 ** 12).map(str),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=10),
)


@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.tuples(st.sampled_from(OVERRIDE_KEYS), RAW_TEXT), min_size=1, max_size=3))
def test_any_training_override_is_accepted_or_refused_in_one_line(items: list[tuple[str, str]]) -> None:
    overrides = [f"{k}={v}" for k, v in items]
    try:
        cfg = load_config("synthetic", overrides)
    except DgmlVizError as exc:
        _one_line(exc)
    else:
        t = cfg["train"]
        assert t["lr"] > 0 and (t["lr_backbone"] is None or t["lr_backbone"] > 0)
        assert (t["lr_query"] is None or t["lr_query"] > 0) and cfg["model"]["reduction"] >= 1
