"""Training recipes: YAML files merged onto :data:`DEFAULTS`, plus ``key=value`` overrides.

``load_config("cub200")`` reads the packaged ``dgml_viz/train/recipes/cub200.yaml``;
a path to a ``.yaml`` file works too. Overrides use dotted keys and YAML
scalars: ``train.epochs=2 model.groups=4 data.mean=[0.5,0.5,0.5]``. Any key
not in the schema raises a one-line :class:`ConfigError` naming it, except
inside the free-form ``data.kwargs`` (extra dataset arguments) and
``model.backbone_kwargs``.

The schema is :mod:`dgml_viz.train.schema`: one frozen dataclass per section (``model``, ``data``,
``train``, ``eval``, ``output``) whose fields give each key's type, default (the CUB-200-2011
reference recipe) and meaning, and check its values; :data:`DEFAULTS` is derived from it. Callers
get the plain nested dict (saved as ``config.yaml`` beside every run); :func:`recipe_from_dict`
gives the typed :class:`~dgml_viz.train.schema.Recipe`.
"""
from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from dgml_viz.data.transforms import IMAGENET_MEAN as _MEAN, IMAGENET_STD as _STD
from dgml_viz.errors import ConfigError
from dgml_viz.train import schema
from dgml_viz.validation import meta_model

IMAGENET_MEAN = list(_MEAN)
IMAGENET_STD = list(_STD)

#: the default recipe as a plain nested dict, derived from the schema's dataclasses (not written twice)
DEFAULTS: dict[str, Any] = schema.defaults()


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
FREE_FORM = schema.free_form_keys()


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


def validate(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Check every value's type and range (through the schema's fields) and the model it describes;
    one-line :class:`ConfigError` naming the key. Runs before any work (nothing is built or allocated).
    Whether ``train.device`` exists is checked when training starts (the config may be read
    on another machine, e.g. by ``evaluate``)."""
    _typed(config, source)
    return config


def _typed(config: dict[str, Any], source: str) -> schema.Recipe:
    """The checked :class:`Recipe` of a resolved config; the model is built on the meta device only."""
    try:
        recipe = schema.build(schema.Recipe, config)
        try:
            meta_model(recipe.model.model_config())
        except ConfigError as exc:
            raise ConfigError(f"model: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return recipe


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


def _on_defaults(data: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(DEFAULTS)
    _merge(config, data, "config")
    return config


def config_from_dict(data: dict[str, Any]) -> dict[str, Any]:
    """Resolve a (possibly partial) config dict against the defaults, validated."""
    return validate(_on_defaults(data))


def recipe_from_dict(data: dict[str, Any]) -> schema.Recipe:
    """The typed view of :func:`config_from_dict`: ``asdict(recipe_from_dict(d)) == config_from_dict(d)``.

    Example:
        >>> recipe_from_dict({"train": {"epochs": 2}}).train.epochs
        2
    """
    return _typed(_on_defaults(data), "config")


def dump_config(config: dict[str, Any]) -> str:
    """YAML text of a resolved config."""
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


__all__ = ["DEFAULTS", "load_config", "config_from_dict", "recipe_from_dict", "apply_overrides", "parse_override",
           "validate", "dump_config", "list_recipes", "resolve_recipe", "recipes_dir"]
