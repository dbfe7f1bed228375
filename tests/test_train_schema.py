"""The recipe schema (typed dataclasses) is the one definition: DEFAULTS, key checks and the typed view."""
from __future__ import annotations

from dataclasses import FrozenInstanceError, asdict, fields, is_dataclass

import pytest
import yaml

from dgml_viz.errors import ConfigError
from dgml_viz.model.config import ModelConfig
from dgml_viz.train import schema
from dgml_viz.train.config import DEFAULTS, FREE_FORM, config_from_dict, list_recipes, recipe_from_dict, \
    recipes_dir, validate


def _keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        dotted = prefix + key
        if isinstance(value, dict) and dotted not in FREE_FORM:
            out |= _keys(value, dotted + ".")
        else:
            out.add(dotted)
    return out


def _schema_keys(cls: type = schema.Recipe, prefix: str = "") -> set[str]:
    out = set()
    for f in fields(cls):
        sub = f.default_factory if isinstance(f.default_factory, type) and is_dataclass(f.default_factory) else None
        out |= _schema_keys(sub, f"{prefix}{f.name}.") if sub else {prefix + f.name}
    return out


def test_schema_fields_are_the_defaults_keys() -> None:
    assert _schema_keys() == _keys(DEFAULTS)
    assert asdict(schema.Recipe()) == DEFAULTS
    assert FREE_FORM == {"data.kwargs", "model.backbone_kwargs"}
    assert len(schema.describe()) == len(_keys(DEFAULTS))


def test_every_field_says_what_it_means() -> None:
    lines = schema.describe()
    undocumented = [line for line in lines if "  # " not in line]
    assert not undocumented
    assert "train.lr: float = 1e-05  # " in "\n".join(lines)


@pytest.mark.parametrize("name", list_recipes())
def test_packaged_recipe_round_trips_through_the_dataclasses(name: str) -> None:
    raw = yaml.safe_load((recipes_dir() / f"{name}.yaml").read_text()) or {}
    recipe = recipe_from_dict(raw)
    assert isinstance(recipe, schema.Recipe) and isinstance(recipe.train.weight_decay, schema.WeightDecay)
    assert asdict(recipe) == config_from_dict(raw)
    assert recipe.train.lr == config_from_dict(raw)["train"]["lr"]


def test_typed_view_is_frozen_and_gives_the_model_config() -> None:
    recipe = recipe_from_dict({"model": {"backbone": "small_cnn", "dim": 96, "reduction": 4,
                                         "backbone_kwargs": {"width": 8}, "pretrained": False}})
    with pytest.raises(FrozenInstanceError):
        recipe.train.lr = 1.0  # type: ignore[misc]
    mc = recipe.model.model_config()
    assert type(mc) is ModelConfig and mc.to_dict() == {"backbone": "small_cnn", "head": "attentive", "groups": 3,
                                                        "dim": 96, "reduction": 4, "freeze_bn": True,
                                                        "backbone_kwargs": {"width": 8}}
    assert recipe.model.pretrained is False


@pytest.mark.parametrize("section,kwargs,msg", [
    (schema.TrainConfig, {"epochs": 0}, "train.epochs must be a positive integer, got 0"),
    (schema.TrainConfig, {"lr_query": "x"}, "train.lr_query (or null) must be a number > 0, got 'x'"),
    (schema.TrainConfig, {"metric_on": "all"}, "train.metric_on='all'; choose one of groups, concat"),
    (schema.WeightDecay, {"keyval": -1}, "train.weight_decay.keyval must be a non-negative number, got -1"),
    (schema.DataConfig, {"crop_scale": [0.5]}, "data.crop_scale must be [min, max], got [0.5]"),
    (schema.DataConfig, {"std": [1, 0, 1]}, "data.std must be a number > 0, got 0"),
    (schema.EvalConfig, {"ks": [1, 0]}, "eval.ks[] must be a positive integer, got 0"),
    (schema.OutputConfig, {"dir": ""}, "output.dir must be a non-empty string, got ''"),
    (schema.RecipeModelConfig, {"groups": 0}, "model.groups must be an integer in [1, 256], got 0"),
    (schema.RecipeModelConfig, {"pretrained": 1}, "model.pretrained must be true or false, got 1"),
])
def test_each_field_checks_its_values(section: type, kwargs: dict, msg: str) -> None:
    with pytest.raises(ConfigError) as err:
        section(**kwargs)
    assert str(err.value) == msg


def test_validate_refuses_a_misshapen_dict_in_one_line() -> None:
    bad = config_from_dict({})
    bad["train"] = {k: v for k, v in bad["train"].items() if k != "lr"}
    with pytest.raises(ConfigError, match=r"^config: missing config key 'train.lr'$"):
        validate(bad)
    bad = config_from_dict({})
    bad["eval"]["extra"] = 1
    with pytest.raises(ConfigError, match=r"^config: unknown config key 'eval.extra'$"):
        validate(bad)
    with pytest.raises(ConfigError, match=r"^config: train must be a mapping"):
        validate({**config_from_dict({}), "train": 3})


def test_recipe_from_dict_unknown_key_names_it() -> None:
    with pytest.raises(ConfigError, match=r"^config: unknown config key 'train.learning_rate'$"):
        recipe_from_dict({"train": {"learning_rate": 0.1}})
