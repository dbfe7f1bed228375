"""One eval transform: every path (datasets, evaluate, interpret, heatmaps, gallery, app) gives
torchvision's Resize + CenterCrop + Normalize, to float precision, on many image sizes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from dgml_viz.data.transforms import EvalTransform, eval_transform
from dgml_viz.inference import prepare_image

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SIZES = [(500, 300), (300, 500), (224, 224), (256, 256), (257, 331), (1000, 37), (37, 1000), (223, 225),
         (100, 80), (64, 64), (225, 1), (640, 427), (427, 640), (811, 613)]


def _torchvision(img: Image.Image, resize: int, size: int) -> torch.Tensor:
    return T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), T.Normalize(MEAN, STD)])(img)


@pytest.mark.parametrize("wh", SIZES)
@pytest.mark.parametrize("resize, size", [(256, 224), (224, 224), (110, 96), (200, 224)])
def test_eval_transform_equals_torchvision(wh: tuple[int, int], resize: int, size: int) -> None:
    rng = np.random.default_rng(wh[0] * 7 + wh[1])
    arr = rng.integers(0, 256, (wh[1], wh[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    expected = _torchvision(img, resize, size)
    t = {"size": size, "resize": resize, "mean": MEAN, "std": STD, "mode": "center_crop"}
    ours, geo = eval_transform(arr, t)
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    # the dataset path (training-time evaluation, evaluate, interpret) is the same tensor, to the bit
    assert torch.equal(EvalTransform(size, resize, MEAN, STD)(img), ours)
    # and the rendering path (heatmaps, gallery, app) too
    tensor, geo2, _ = prepare_image(arr, t)
    assert torch.equal(tensor, ours) and geo2 == geo


def test_file_through_evaluation_and_rendering_paths_is_one_tensor(tmp_path) -> None:
    from skimage import data

    from dgml_viz.data.folder import ImageFolderDataset

    path = tmp_path / "cls" / "coffee.png"
    path.parent.mkdir()
    Image.fromarray(data.coffee()).save(path)
    t = {"size": 224, "resize": 256, "mean": MEAN, "std": STD, "mode": "center_crop"}
    ds = ImageFolderDataset(tmp_path, "all", transform=EvalTransform.from_dict(t))
    rendered, _, _ = prepare_image(path, t)
    assert torch.equal(ds[0]["image"], rendered)


def _files_people_have(folder) -> list:
    """Files written by Pillow the way cameras and editors write them: an EXIF-rotated JPEG (orientation
    6, as phones save portrait shots), an RGBA PNG with transparent pixels, a palette GIF, a grey JPEG,
    a 16-bit grey PNG."""
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize((300, 200))
    out = []
    exif = Image.Exif()
    exif[0x0112] = 6
    p = folder / "rotated.jpg"
    photo.save(p, quality=90, exif=exif.tobytes())
    out.append(p)
    rgba = photo.convert("RGBA")
    alpha = np.full((200, 300), 255, np.uint8)
    alpha[:, :120] = 0
    rgba.putalpha(Image.fromarray(alpha))
    out.append(folder / "transparent.png")
    rgba.save(out[-1])
    out.append(folder / "palette.gif")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(out[-1])
    out.append(folder / "grey.jpg")
    photo.convert("L").save(out[-1], quality=85)
    out.append(folder / "grey16.png")
    Image.fromarray((np.asarray(photo.convert("L"), np.uint16) * 257)).save(out[-1])
    return out


def test_odd_files_through_evaluation_and_rendering_paths_are_one_tensor(tmp_path) -> None:
    """The dataset (evaluation) path and the rendering path decode through the one decoder: a
    rotated JPEG is seen upright by both, transparency is white in both."""
    from dgml_viz.data.folder import ImageFolderDataset

    folder = tmp_path / "cls"
    folder.mkdir()
    paths = _files_people_have(folder)
    t = {"size": 96, "resize": 110, "mean": MEAN, "std": STD, "mode": "center_crop"}
    ds = ImageFolderDataset(tmp_path, "all", transform=EvalTransform.from_dict(t))
    by_name = {Path(item["path"]).name: item["image"] for item in (ds[i] for i in range(len(ds)))}
    assert sorted(by_name) == sorted(p.name for p in paths)
    for p in paths:
        rendered, _, _ = prepare_image(p, t)
        assert torch.equal(by_name[p.name], rendered), p.name
    # independent views of what "upright" and "over white" mean, from Pillow itself
    from PIL import ImageOps

    with Image.open(folder / "rotated.jpg") as img:
        upright = ImageOps.exif_transpose(img)
        assert upright.size == (200, 300)
    expected, _ = eval_transform(np.asarray(upright.convert("RGB")), t)
    torch.testing.assert_close(by_name["rotated.jpg"], expected, atol=1e-5, rtol=0)
    with Image.open(folder / "transparent.png") as img:
        white = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA"))
    expected, _ = eval_transform(np.asarray(white.convert("RGB")), t)
    torch.testing.assert_close(by_name["transparent.png"], expected, atol=2 / 255 / min(STD) + 1e-5, rtol=0)


@pytest.mark.parametrize("wh", SIZES[:8])
def test_bicubic_interpolation_equals_torchvision(wh: tuple[int, int]) -> None:
    """timm models record ``interpolation: bicubic``; it is applied, not dropped."""
    rng = np.random.default_rng(wh[0] + 3 * wh[1])
    arr = rng.integers(0, 256, (wh[1], wh[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    bicubic = T.InterpolationMode.BICUBIC
    expected = T.Compose([T.Resize(248, interpolation=bicubic), T.CenterCrop(224), T.ToTensor(),
                          T.Normalize(MEAN, STD)])(img)
    t = {"size": 224, "resize": 248, "mean": MEAN, "std": STD, "mode": "center_crop", "interpolation": "bicubic"}
    ours, _ = eval_transform(arr, t)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    bilinear, _ = eval_transform(arr, {**t, "interpolation": "bilinear"})
    if wh != (224, 224) and wh[0] != wh[1] or min(wh) != 248:
        assert not torch.equal(ours, bilinear)


def test_bgr_channel_order_is_bn_inception_preprocessing() -> None:
    """BN-Inception: BGR in [0, 255] minus (104, 117, 128), written as an independent formula."""
    from dgml_viz.model.bninception import BNInception

    arr = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    ours, geo = eval_transform(arr, BNInception.eval_transform)
    crop = T.CenterCrop(224)(T.Resize(256)(Image.fromarray(arr)))
    bgr = np.asarray(crop, dtype=np.float64)[:, :, ::-1] - np.array([104.0, 117.0, 128.0])
    torch.testing.assert_close(ours, torch.from_numpy(bgr.transpose(2, 0, 1).copy()).float(), atol=2e-3, rtol=0)
