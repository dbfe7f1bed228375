"""The synthetic parts benchmark: determinism, class split, masks, colours, and the recipe trains."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dgml_viz.data.synthetic import (
    COLOUR_NAMES,
    MEAN,
    PALETTE,
    PART_NAMES,
    SHAPE_NAMES,
    STD,
    SyntheticParts,
    class_attributes,
    shape_mask,
    synthetic_transform,
)
from dgml_viz.errors import DatasetError

SIZE = 64  # small images keep the tests fast; the recipe uses the default (128)


@pytest.fixture(scope="module")
def test_ds() -> SyntheticParts:
    return SyntheticParts("test", seed=0, image_size=SIZE, samples_per_class=2)


def test_splits_have_disjoint_classes_that_recombine_known_parts() -> None:
    train, test = class_attributes("train"), class_attributes("test")
    assert len(train) == len(test) == 32
    assert not set(train) & set(test)
    assert set(train) | set(test) == set(itertools.product(range(len(SHAPE_NAMES)), repeat=len(PART_NAMES)))
    # every (part, shape) and every pair of (part, shape) values occurs in both splits
    for split in (train, test):
        for i, j in itertools.combinations(range(len(PART_NAMES)), 2):
            assert {(c[i], c[j]) for c in split} == set(itertools.product(range(len(SHAPE_NAMES)), repeat=2))


def test_items_are_deterministic_and_order_independent() -> None:
    a = SyntheticParts("train", seed=3, image_size=SIZE, samples_per_class=3, cache=False)
    b = SyntheticParts("train", seed=3, image_size=SIZE, samples_per_class=3)
    late = b[7]  # rendered first, out of order
    for i in (7, 0, 50):
        x, y = a[i], b[i]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["part_masks"], y["part_masks"])
    assert torch.equal(late["image"], a[7]["image"])
    other = SyntheticParts("train", seed=4, image_size=SIZE, samples_per_class=3)
    assert not torch.equal(other[7]["image"], a[7]["image"])


def test_item_contract(test_ds: SyntheticParts) -> None:
    item = test_ds[5]
    assert item["image"].shape == (3, SIZE, SIZE) and item["image"].dtype == torch.float32
    assert item["part_masks"].shape == (3, SIZE, SIZE) and item["part_masks"].dtype == torch.bool
    assert item["keypoints"].shape == (3, 3)
    assert item["label"] == 5 // 2 == test_ds.labels[5]
    assert len(test_ds) == 64 and test_ds.class_names[0].startswith("red=")
    assert test_ds.transform == synthetic_transform(SIZE)
    # image is the raw uint8 picture normalised with the stored transform
    raw = torch.from_numpy(test_ds.raw_image(5)).permute(2, 0, 1).float() / 255
    mean = torch.tensor(test_ds.transform["mean"]).view(3, 1, 1)
    std = torch.tensor(test_ds.transform["std"]).view(3, 1, 1)
    torch.testing.assert_close(item["image"] * std + mean, raw, atol=1e-5, rtol=0)


def test_part_masks_are_disjoint_nonempty_and_hold_their_keypoint(test_ds: SyntheticParts) -> None:
    for i in range(0, len(test_ds), 7):
        item = test_ds[i]
        masks = item["part_masks"]
        assert (masks.sum((1, 2)) > 10).all()
        assert masks.sum(0).max() <= 1
        for p, (x, y, vis) in enumerate(item["keypoints"].tolist()):
            assert vis == 1 and masks[p, int(y), int(x)]


def test_part_shape_is_the_class_attribute_and_colour_the_part_type(test_ds: SyntheticParts) -> None:
    """Part p's mask is exactly the class's attribute shape for p; its pixels are part p's colour."""
    palette = np.array(list(PALETTE.values()))
    pal = palette / np.linalg.norm(palette, axis=1, keepdims=True)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
    for i in range(0, len(test_ds), 5):
        item, scene = test_ds[i], test_ds.scene(i)
        rgb = test_ds.raw_image(i).astype(np.float64) / 255
        for p, attr in enumerate(test_ds.classes[item["label"]]):
            (cx, cy), r = scene.centres[p], scene.radii[p]
            expected = shape_mask(SHAPE_NAMES[attr], xx, yy, float(cx), float(cy), float(r))
            assert np.array_equal(item["part_masks"][p].numpy(), expected)
            pix = rgb[expected]
            pix = pix / np.linalg.norm(pix, axis=1, keepdims=True)  # colour direction (stripes vary brightness)
            votes = np.bincount((pix @ pal.T).argmax(1), minlength=len(palette))
            assert COLOUR_NAMES[votes.argmax()] == PART_NAMES[p]


def test_colours_and_shapes_alone_do_not_reveal_the_class() -> None:
    """Distractors reuse the part colours and the attribute shapes (hollow), so neither the image's
    colours nor its bag of shapes tells the class: the attribute must be read at the part."""
    ds = SyntheticParts("train", seed=0, image_size=SIZE, samples_per_class=4)
    n = len(ds)
    colour_reused = shape_reused = foreign_shape = 0
    for i in range(0, n, 3):
        scene = ds.scene(i)
        part_shapes = {SHAPE_NAMES[a] for a in ds.classes[ds.labels[i]]}
        colour_reused += any(c in PART_NAMES for _, c in scene.distractors)
        shape_reused += any(k in part_shapes for k, _ in scene.distractors)
        foreign_shape += any(k not in part_shapes for k, _ in scene.distractors)
        # distractors are hollow: their pixels never form a filled part-sized blob of a part colour
        assert len(scene.distractors) == ds.distractors
    m = math.ceil(n / 3)
    assert colour_reused > 0.8 * m and shape_reused > 0.8 * m and foreign_shape > 0.5 * m


def test_bad_arguments_raise_dataset_errors() -> None:
    with pytest.raises(DatasetError, match="unknown split"):
        SyntheticParts("val")
    with pytest.raises(DatasetError, match="image_size"):
        SyntheticParts("train", image_size=8)
    with pytest.raises(IndexError):
        SyntheticParts("test", image_size=SIZE, samples_per_class=1).scene(32)


def test_registry_builds_the_benchmark() -> None:
    from dgml_viz.data import build_dataset

    ds = build_dataset("synthetic", "test", image_size=SIZE, samples_per_class=1, transform="ignored")
    assert isinstance(ds, SyntheticParts) and len(ds) == 32
    assert tuple(synthetic_transform()["mean"]) == MEAN and tuple(synthetic_transform()["std"]) == STD


def test_synthetic_recipe_trains_loss_falls_and_checkpoint_loads(tmp_path: Path) -> None:
    """A few steps of the shipped recipe (tiny sizes, both phases squeezed into 3 epochs: the soft plain
    phase, then every term with the temperature back at 1): the metric loss falls (the total gains the
    attention terms on the way, so it is not comparable across the phases), the checkpoint loads."""
    from dgml_viz.model.checkpoint import load_checkpoint
    from dgml_viz.train import load_config, train

    cfg = load_config("synthetic", [
        "data.size=64", "data.resize=64", "data.kwargs.image_size=64", "data.kwargs.samples_per_class=4",
        "model.dim=24", "model.backbone_kwargs.width=8", "train.batch_classes=8", "train.batch_per_class=2",
        "train.epochs=3", "train.steps_per_epoch=8", "train.lr_steps=[10]", "train.eval_every=3",
        "train.time_budget_s=null", "eval.nmi=false", "train.attention_start_epoch=1", "train.attention_warmup_epochs=1",
    ])
    result = train(cfg, tmp_path / "run")
    losses = [row["metric_loss"] for row in result["history"]]
    assert losses[-1] < losses[0] and result["history"][-1]["consistency_loss"] > 0
    model = load_checkpoint(result["last_ckpt"])
    assert model.transform["size"] == 64 and model.transform["mean"] == list(MEAN)
    item = SyntheticParts("test", image_size=64, samples_per_class=1)[0]
    with torch.no_grad():
        out = model.eval()(item["image"].unsqueeze(0))
    assert out.attention is not None and out.attention.shape == (1, 3, 8, 8)
