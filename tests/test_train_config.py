"""Recipes: packaged hyperparameters, overrides, one-line errors for bad keys/values."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dgml_viz.cli import main
from dgml_viz.errors import ConfigError
from dgml_viz.train.config import DEFAULTS, dump_config, list_recipes, load_config

# DESIGN.md reference table: epochs, lr, decay (backbone, key/val, query), LR step, lambda_div, beta lr
REFERENCE = {
    "cub200": (100, 1e-5, (0.003, 0.003, 0.001), 55, 0.02, 5e-5),
    "cars196": (200, 1e-5, (0.002, 0.002, 0.001), 100, 0.01, 5e-5),
    "sop": (150, 9e-6, (3e-4, 3e-4, 1e-4), 100, 0.03, 1e-5),
    "inshop": (150, 1e-5, (3e-4, 3e-4, 1e-4), 100, 0.03, 5e-5),
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_recipes(name: str) -> None:
    cfg = load_config(name)
    t = cfg["train"]
    epochs, lr, decay, step, lam, beta_lr = REFERENCE[name]
    assert (t["epochs"], t["lr"], t["lr_steps"], t["lambda_div"], t["beta_lr"]) == (epochs, lr, [step], lam, beta_lr)
    assert (t["weight_decay"]["backbone"], t["weight_decay"]["keyval"], t["weight_decay"]["query"]) == decay
    assert (t["batch_classes"], t["batch_per_class"], t["gamma"]) == (56, 2, 0.3)
    assert cfg["model"]["freeze_bn"] is True and cfg["model"]["groups"] == 3 and cfg["model"]["dim"] == 512
    assert (cfg["data"]["size"], cfg["data"]["resize"], t["loss"], t["margin"], t["beta_init"]) == (
        224, 256, "margin", 0.2, 1.2)
    assert cfg["data"]["name"] == name


def test_all_packaged_recipes_load() -> None:
    assert {"cub200", "cars196", "sop", "inshop", "fashion_mnist"} <= set(list_recipes())
    for name in list_recipes():
        load_config(name)
    assert load_config("inshop")["data"]["gallery_split"] == "gallery"


def test_overrides_dotted_keys_and_yaml_scalars() -> None:
    cfg = load_config("cub200", ["train.epochs=2", "model.groups=4", "train.lr=1e-3", "train.amp=false",
                                 "data.root=/x/y", "train.lr_steps=[1,2]", "data.kwargs.num_train=64",
                                 "train.max_steps=null"])
    assert cfg["train"]["epochs"] == 2 and cfg["model"]["groups"] == 4 and cfg["train"]["lr"] == 1e-3
    assert cfg["train"]["amp"] is False and cfg["data"]["root"] == "/x/y" and cfg["train"]["lr_steps"] == [1, 2]
    assert cfg["data"]["kwargs"] == {"num_train": 64} and cfg["train"]["max_steps"] is None
    assert load_config("cub200")["train"]["epochs"] == 100  # defaults untouched
    assert DEFAULTS["data"]["kwargs"] == {}


@pytest.mark.parametrize("override,key", [("train.epoch=2", "train.epoch"), ("modle.groups=2", "modle.groups"),
                                          ("train.weight_decay.keys=1", "train.weight_decay.keys"),
                                          ("train.epochs.x=1", "train.epochs.x")])
def test_unknown_override_key_names_it(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config("cub200", [override])
    assert repr(key) in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_recipe_key_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  epochs: 3\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value) and "'train.learning_rate'" in str(exc.value)


@pytest.mark.parametrize("override,msg", [("train.epochs=0", "train.epochs must be a positive integer"),
                                          ("train.loss=triplet", "train.loss='triplet'"),
                                          ("data.mean=[1,2]", "data.mean must be a list of 3"),
                                          ("train.lr=fast", "train.lr must be a number > 0"),
                                          ("notakeyvalue", "not key=value")])
def test_bad_values(override: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg.replace("[", r"\[")):
        load_config("cub200", [override])


def test_unknown_recipe_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown recipe 'cub2000'.*cub200"):
        load_config("cub2000")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def test_dump_roundtrip(tmp_path: Path) -> None:
    cfg = load_config("sop", ["train.epochs=3"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    assert yaml.safe_load(dump_config(cfg)) == cfg


def test_cli_bad_key_is_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["train", "--config", "cub200", "--run-dir", str(tmp_path / "r"), "train.epoch=2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err.startswith("dgml-viz train: error:") and "'train.epoch'" in err
