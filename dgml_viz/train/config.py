"""Training recipes: YAML files merged onto :data:`DEFAULTS`, plus ``key=value`` overrides.

``load_config("cub200")`` reads the packaged ``dgml_viz/train/recipes/cub200.yaml``;
a path to a ``.yaml`` file works too. Overrides use dotted keys and YAML
scalars: ``train.epochs=2 model.groups=4 data.mean=[0.5,0.5,0.5]``. Any key
not in the schema raises a one-line :class:`ConfigError` naming it, except
inside the free-form ``data.kwargs`` (extra dataset arguments) and
``model.backbone_kwargs``.

Schema (defaults = the CUB-200-2011 reference recipe)::

    model:  backbone, head, groups, dim, reduction, pretrained, freeze_bn, backbone_kwargs
    data:   name, root, train_split, test_split, gallery_split (In-Shop: query/gallery),
            size, resize, mode (center_crop|full), mean, std, crop_scale, flip, kwargs
    train:  epochs, batch_classes (n), batch_per_class (m), lr, lr_backbone (null = lr),
            lr_query (null = lr), layer_decay (null = off; backbones that declare layer_ids, e.g. timm ViTs:
            lr of depth i = lr_backbone * layer_decay ** (depths - 1 - i)),
            weight_decay {backbone, keyval, query}, lr_steps, gamma, beta_lr,
            loss (margin|multi_similarity), margin, beta_init, cutoff, nonzero_loss_cutoff,
            ms_alpha, ms_beta, ms_base, ms_epsilon, lambda_div, div_alpha, div_beta, div_c,
            lambda_div_early (null = lambda_div throughout; else the diversity weight before
            attention_start_epoch, ramping to lambda_div with the attention terms),
            lambda_ent (attention-entropy weight, 0 = off), attention_start_epoch (attention terms off
            before it), attention_warmup_epochs (linear ramp of the attention terms after it),
            lambda_overlap (attention-overlap weight, 0 = off), overlap_radius (cells),
            lambda_spread (attention spatial-variance weight, 0 = off),
            metric_on (groups = one metric loss per group, DESIGN.md | concat = one on the retrieval embedding),
            eval_every, seed, num_workers, amp, channels_last, compile, deterministic,
            max_steps, steps_per_epoch, time_budget_s, device (auto|cpu|cuda|cuda:N),
            progress, checkpoint_metric, tensorboard (TensorBoard logs in run_dir/tb + probe attention timeline)
    eval:   ks, nmi, batch_size, chunk
    output: dir
"""
from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from dgml_viz.errors import ConfigError

from dgml_viz.data.transforms import IMAGENET_MEAN as _MEAN, IMAGENET_STD as _STD

IMAGENET_MEAN = list(_MEAN)
IMAGENET_STD = list(_STD)

DEFAULTS: dict[str, Any] = {
    "model": {"backbone": "resnet50", "head": "attentive", "groups": 3, "dim": 512, "reduction": 8,
              "pretrained": True, "freeze_bn": True, "backbone_kwargs": {}},
    "data": {"name": "cub200", "root": None, "train_split": "train", "test_split": "test",
             "gallery_split": None, "size": 224, "resize": 256, "mode": "center_crop",
             "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "crop_scale": [0.08, 1.0], "flip": True, "kwargs": {}},
    "train": {"epochs": 100, "batch_classes": 56, "batch_per_class": 2, "lr": 1e-5, "lr_backbone": None,
              "weight_decay": {"backbone": 0.003, "keyval": 0.003, "query": 0.001},
              "lr_steps": [55], "gamma": 0.3, "beta_lr": 5e-5,
              "loss": "margin", "margin": 0.2, "beta_init": 1.2, "cutoff": 0.5, "nonzero_loss_cutoff": 1.4,
              "ms_alpha": 2.0, "ms_beta": 50.0, "ms_base": 0.5, "ms_epsilon": 0.1,
              "lambda_div": 0.02, "lambda_div_early": None, "div_alpha": 2.0, "div_beta": 0.5, "div_c": 25.0,
              "lambda_ent": 0.0, "attention_warmup_epochs": 0, "attention_start_epoch": 0, "lambda_overlap": 0.0, "overlap_radius": 0, "lr_query": None,
              "layer_decay": None,
              "metric_on": "groups", "lambda_spread": 0.0,
              "eval_every": 1, "seed": 0, "num_workers": 4, "amp": True, "channels_last": True,
              "compile": False, "deterministic": False, "max_steps": None, "steps_per_epoch": None,
              "time_budget_s": None, "device": "auto", "progress": True, "checkpoint_metric": "recall@1",
              "tensorboard": True},
    "eval": {"ks": [1, 2, 4, 8], "nmi": True, "batch_size": 128, "chunk": 2048},
    "output": {"dir": "runs"},
}

class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-5`` (no dot, YAML 1.2 style) as a float, not a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


#: dict-valued keys whose contents are free-form (not checked against the schema)
FREE_FORM = {"data.kwargs", "model.backbone_kwargs"}


def recipes_dir() -> Path:
    """Folder of the packaged recipes."""
    return Path(str(resources.files("dgml_viz.train") / "recipes"))


def list_recipes() -> list[str]:
    """Names of the packaged recipes."""
    d = recipes_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _merge(base: dict[str, Any], update: dict[str, Any], source: str, prefix: str = "") -> None:
    """Deep-merge ``update`` into ``base`` in place, rejecting keys ``base`` does not have."""
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"{source}: unknown config key {dotted!r}")
        if dotted in FREE_FORM:
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{source}: {dotted!r} must be a mapping")
            base[key] = dict(value or {})
        elif isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {dotted!r} must be a mapping, got {value!r}")
            _merge(base[key], value, source, dotted + ".")
        else:
            base[key] = value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = _yaml_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read recipe ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        first = str(exc).replace("\n", " ")[:160]
        raise ConfigError(f"{path}: invalid YAML ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: recipe must be a YAML mapping")
    return data


def resolve_recipe(name_or_path: str | Path) -> Path:
    """Path of a packaged recipe name or an existing YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"{p}: no such recipe file")
        return p
    cand = recipes_dir() / f"{name_or_path}.yaml"
    if cand.is_file():
        return cand
    raise ConfigError(f"unknown recipe {str(name_or_path)!r}; packaged recipes: {', '.join(list_recipes())}")


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.epochs=2"`` -> ``("train.epochs", 2)`` (value parsed as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not key=value")
    try:
        value = _yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def apply_overrides(config: dict[str, Any], overrides: Iterable[str | tuple[str, Any]]) -> dict[str, Any]:
    """Set dotted keys in ``config`` (in place; returns it); unknown keys raise ConfigError."""
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        free = next((f for f in FREE_FORM if key.startswith(f + ".")), None)
        node: Any = config
        if free is not None:  # e.g. data.kwargs.num_train=64: any sub-key is allowed
            for part in free.split("."):
                node = node[part]
            rest = key[len(free) + 1:].split(".")
            for part in rest[:-1]:
                node = node.setdefault(part, {})
            node[rest[-1]] = value
            continue
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override: unknown config key {key!r}")
            node = node[part]
        leaf = parts[-1]
        if leaf not in node:
            raise ConfigError(f"override: unknown config key {key!r}")
        if isinstance(node[leaf], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"override: {key!r} is a section; set one of its keys instead")
            if key in FREE_FORM:
                node[leaf] = dict(value)
            else:
                _merge(node[leaf], value, "override", key + ".")
        else:
            node[leaf] = value
    return config


_CHOICES = {
    ("train", "loss"): ("margin", "multi_similarity"),
    ("data", "mode"): ("center_crop", "full"),
    ("train", "metric_on"): ("groups", "concat"),
}
_POSITIVE_INTS = [("train", "epochs"), ("train", "batch_classes"), ("train", "batch_per_class"),
                  ("train", "eval_every"), ("eval", "batch_size"), ("eval", "chunk")]
_OPTIONAL_POSITIVE_INTS = [("train", "max_steps"), ("train", "steps_per_epoch")]
_NON_NEGATIVE_INTS = [("train", "attention_warmup_epochs"), ("train", "attention_start_epoch"),
                      ("train", "overlap_radius"), ("train", "seed"), ("train", "num_workers")]
#: learning rates: > 0 (a zero or negative rate trains nothing or diverges)
_RATES = [("train", "lr"), ("train", "beta_lr")]
_OPTIONAL_RATES = [("train", "lr_backbone"), ("train", "lr_query"), ("train", "time_budget_s"),
                   ("train", "layer_decay"), ("train", "lambda_div_early")]
_NON_NEGATIVE = [("train", k) for k in ("lambda_div", "lambda_ent", "lambda_overlap", "lambda_spread", "margin",
                                        "beta_init", "cutoff", "nonzero_loss_cutoff", "ms_alpha", "ms_beta",
                                        "ms_base", "ms_epsilon", "div_alpha", "div_beta", "div_c")]
_BOOLS = [("model", "pretrained"), ("model", "freeze_bn"), ("data", "flip"), ("train", "amp"),
          ("train", "channels_last"), ("train", "compile"), ("train", "deterministic"), ("train", "progress"),
          ("train", "tensorboard"),
          ("eval", "nmi")]


def validate(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Check every value's type and range and the model it describes; one-line
    :class:`ConfigError` naming the key. Runs before any work (nothing is built or allocated).
    Whether ``train.device`` exists is checked when training starts (the config may be read
    on another machine, e.g. by ``evaluate``)."""
    try:
        _validate(config)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def _validate(config: dict[str, Any]) -> None:
    from dgml_viz.validation import check_bool, check_int, check_number, check_str

    for (sec, key), allowed in _CHOICES.items():
        if config[sec][key] not in allowed:
            raise ConfigError(f"{sec}.{key}={config[sec][key]!r}; choose one of {', '.join(allowed)}")
    for sec, key in _POSITIVE_INTS:
        check_int(config[sec][key], f"{sec}.{key}", 1)
    for sec, key in _OPTIONAL_POSITIVE_INTS:
        if config[sec][key] is not None:
            check_int(config[sec][key], f"{sec}.{key} (or null)", 1)
    for sec, key in _NON_NEGATIVE_INTS:
        check_int(config[sec][key], f"{sec}.{key}", 0)
    for sec, key in _RATES:
        check_number(config[sec][key], f"{sec}.{key}", positive=True)
    for sec, key in _OPTIONAL_RATES:
        if config[sec][key] is not None:
            check_number(config[sec][key], f"{sec}.{key} (or null)", positive=True)
    for sec, key in _NON_NEGATIVE:
        check_number(config[sec][key], f"{sec}.{key}", lo=0)
    for sec, key in _BOOLS:
        check_bool(config[sec][key], f"{sec}.{key}")
    ks = config["eval"]["ks"]
    if not isinstance(ks, list) or not ks:
        raise ConfigError("eval.ks must be a non-empty list of positive integers")
    for k in ks:
        check_int(k, "eval.ks[]", 1)
    _validate_train(config["train"])
    _validate_data(config["data"])
    check_str(config["output"]["dir"], "output.dir")
    _validate_model(config["model"])


def _validate_train(t: dict[str, Any]) -> None:
    from dgml_viz.validation import check_int, check_number, check_str

    check_number(t["gamma"], "train.gamma", positive=True)
    if not isinstance(t["weight_decay"], dict) or set(t["weight_decay"]) != {"backbone", "keyval", "query"}:
        raise ConfigError("train.weight_decay must map backbone, keyval and query to numbers")
    for key, value in t["weight_decay"].items():
        check_number(value, f"train.weight_decay.{key}", lo=0)
    if not isinstance(t["lr_steps"], list):
        raise ConfigError("train.lr_steps must be a list of epochs")
    for step in t["lr_steps"]:
        check_int(step, "train.lr_steps[]", 1)
    check_str(t["checkpoint_metric"], "train.checkpoint_metric")
    if not isinstance(t["device"], str):
        raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {t['device']!r}")


def _validate_data(d: dict[str, Any]) -> None:
    from dgml_viz.validation import check_number, check_str, check_transform

    check_str(d["name"], "data.name")
    if d["root"] is not None:
        check_str(d["root"], "data.root (or null)")
    check_transform({k: d[k] for k in ("size", "resize", "mean", "std", "mode")}, "data")
    scale = d["crop_scale"]
    if not (isinstance(scale, list) and len(scale) == 2):
        raise ConfigError(f"data.crop_scale must be [min, max], got {scale!r}")
    lo = check_number(scale[0], "data.crop_scale[0]", positive=True, hi=1)
    check_number(scale[1], "data.crop_scale[1]", lo=lo, hi=1)


def _validate_model(model: dict[str, Any]) -> None:
    """The model section describes a buildable, bounded model (built on the meta device only)."""
    from dgml_viz.model.config import ModelConfig
    from dgml_viz.validation import meta_model

    m = dict(model)
    m.pop("pretrained")
    try:
        model_config = ModelConfig(**m)
    except ConfigError as exc:
        raise ConfigError(f"model.{exc}") from None
    try:
        meta_model(model_config)
    except ConfigError as exc:
        raise ConfigError(f"model: {exc}") from None


def load_config(name_or_path: str | Path | None = None,
                overrides: Iterable[str | tuple[str, Any]] = ()) -> dict[str, Any]:
    """Resolved config: defaults <- recipe (name or path; ``None`` = defaults only) <- overrides."""
    config = copy.deepcopy(DEFAULTS)
    source = "config"
    if name_or_path is not None:
        path = resolve_recipe(name_or_path)
        source = str(path)
        _merge(config, _read_yaml(path), source)
    apply_overrides(config, overrides)
    return validate(config, source)


def config_from_dict(data: dict[str, Any]) -> dict[str, Any]:
    """Resolve a (possibly partial) config dict against the defaults, validated."""
    config = copy.deepcopy(DEFAULTS)
    _merge(config, data, "config")
    return validate(config)


def dump_config(config: dict[str, Any]) -> str:
    """YAML text of a resolved config."""
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


__all__ = ["DEFAULTS", "load_config", "config_from_dict", "apply_overrides", "parse_override", "validate",
           "dump_config", "list_recipes", "resolve_recipe", "recipes_dir"]
