"""Benchmark layouts parse to the right splits, labels, boxes and keypoints (tiny fixtures)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dgml_viz.data import build_dataset, list_datasets
from dgml_viz.data.fashion_mnist import DEFAULT_ROOT, FashionMNIST, read_idx
from dgml_viz.data.train_transforms import EvalTransform, TrainTransform
from dgml_viz.errors import ConfigError, DatasetError


def _img(path: Path, w: int = 40, h: int = 30, color=(90, 90, 90), fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), color).save(path, format=fmt)


# ---------------------------------------------------------------- CUB-200-2011

CUB_CLASSES = {1: "001.Black_footed_Albatross", 2: "002.Laysan_Albatross",
               101: "101.White_Pelican", 200: "200.Common_Yellowthroat"}


def make_cub(root: Path) -> Path:
    """CUB_200_2011 layout: 4 classes (two train, two test), 2 or 3 images each."""
    cub = root / "CUB_200_2011"
    lines_img, lines_lab, lines_box, lines_parts = [], [], [], []
    img_id = 0
    for cls, name in CUB_CLASSES.items():
        for j in range(3 if cls in (1, 101) else 2):
            img_id += 1
            rel = f"{name}/{name.split('.')[1]}_{j:04d}_{img_id}.jpg"
            _img(cub / "images" / rel, 100, 50)
            lines_img.append(f"{img_id} {rel}")
            lines_lab.append(f"{img_id} {cls}")
            lines_box.append(f"{img_id} 10.0 5.0 60.0 40.0")
            for part in range(1, 16):
                vis = int(part % 3 != 0)
                x, y = (float(part * 5), float(part + 10)) if vis else (0.0, 0.0)
                lines_parts.append(f"{img_id} {part} {x} {y} {vis}")
    (cub / "parts").mkdir(parents=True, exist_ok=True)
    (cub / "images.txt").write_text("\n".join(lines_img) + "\n")
    (cub / "image_class_labels.txt").write_text("\n".join(lines_lab) + "\n")
    (cub / "bounding_boxes.txt").write_text("\n".join(lines_box) + "\n")
    (cub / "classes.txt").write_text("\n".join(f"{c} {n}" for c, n in CUB_CLASSES.items()) + "\n")
    (cub / "parts" / "parts.txt").write_text("\n".join(f"{i} part name {i}" for i in range(1, 16)) + "\n")
    (cub / "parts" / "part_locs.txt").write_text("\n".join(lines_parts) + "\n")
    return cub


def test_cub_splits_labels_and_keypoints(tmp_path: Path) -> None:
    cub = make_cub(tmp_path)
    tr = build_dataset("cub200", "train", tmp_path, transform=EvalTransform(64, 64))
    te = build_dataset("cub200", "test", cub, transform=EvalTransform(64, 64))
    assert (len(tr), len(te)) == (5, 5)
    assert tr.labels == [0, 0, 0, 1, 1] and te.labels == [0, 0, 0, 1, 1]
    assert tr.class_names == [CUB_CLASSES[1], CUB_CLASSES[2]]
    assert te.class_names == [CUB_CLASSES[101], CUB_CLASSES[200]]
    assert len(tr.part_names) == 15
    item = tr[0]
    assert item["image"].shape == (3, 64, 64) and item["label"] == 0
    kp = item["keypoints"]
    assert kp.shape == (15, 3)
    # 100x50 image: shorter side resized to 64 -> 128x64, then the central 64x64 (left = 32).
    sx, sy, left = 128 / 100, 64 / 50, 32
    part1 = torch.tensor([5.0 * sx - left, 11.0 * sy])  # part 1 at (5, 11) -> left of the crop
    assert torch.allclose(kp[0, :2], part1)
    assert kp[0, 2] == 0  # outside the crop -> not visible
    part7 = torch.tensor([35.0 * sx - left, 17.0 * sy])
    assert torch.allclose(kp[6, :2], part7) and kp[6, 2] == 1
    assert kp[2, 2] == 0  # invisible in the file stays invisible
    box = item["bbox"]
    # file box (x, y, w, h) = (10, 5, 60, 40) -> corners (10, 5), (70, 45), clipped to the crop
    assert torch.allclose(box, torch.tensor([0.0, 5.0 * sy, 70.0 * sx - left, 45.0 * sy]))


@pytest.mark.parametrize("transform", [EvalTransform(48, 56), EvalTransform(48, 48, mode="full"),
                                       TrainTransform(48, scale=(0.4, 1.0))])
def test_keypoints_follow_the_pixels(tmp_path: Path, transform) -> None:
    """A red dot drawn at a keypoint is red at the mapped tensor coordinate (crop, resize, flip)."""
    img = np.full((60, 90, 3), 40, np.uint8)
    x, y = 50, 30
    img[y - 3:y + 4, x - 3:x + 4] = (255, 0, 0)
    from dgml_viz.data.folder import ImageListDataset

    path = tmp_path / "a.png"
    Image.fromarray(img).save(path)
    ds = ImageListDataset([path], [0], ["c"], transform,
                          keypoints=torch.tensor([[[x + 0.5, y + 0.5, 1.0]]]))
    torch.manual_seed(3)
    checked = 0
    for _ in range(8):
        item = ds[0]
        kx, ky, vis = item["keypoints"][0].tolist()
        if not vis:
            continue
        pix = item["image"][:, int(ky), int(kx)]
        assert pix[0] > 1.5 and pix[1] < 0, (kx, ky, pix)
        checked += 1
    assert checked >= 4


# ---------------------------------------------------------------- Cars196


def make_cars(root: Path) -> Path:
    import scipy.io

    rows = [("car_ims/000001.jpg", 1), ("car_ims/000002.jpg", 1), ("car_ims/000003.jpg", 98),
            ("car_ims/000004.jpg", 99), ("car_ims/000005.jpg", 196), ("car_ims/000006.jpg", 196)]
    dt = [("relative_im_path", "O"), ("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"),
          ("class", "O"), ("test", "O")]
    ann = np.zeros((1, len(rows)), dtype=dt)
    for i, (p, c) in enumerate(rows):
        _img(root / p, 50, 30, fmt="JPEG")
        ann[0, i] = (p, np.uint8(2), np.uint8(3), np.uint16(40), np.uint16(25), np.uint8(c), np.uint8(i % 2))
    names = np.array([f"Make Model {i}" for i in range(1, 197)], dtype=object).reshape(1, -1)
    scipy.io.savemat(str(root / "cars_annos.mat"), {"annotations": ann, "class_names": names})
    return root


def test_cars196_class_disjoint_split(tmp_path: Path) -> None:
    make_cars(tmp_path)
    tr = build_dataset("cars196", "train", tmp_path, transform=EvalTransform(32, 32, mode="full"))
    te = build_dataset("cars196", "test", tmp_path, transform=EvalTransform(32, 32, mode="full"))
    assert tr.labels == [0, 0, 1] and tr.class_names == ["Make Model 1", "Make Model 98"]
    assert te.labels == [0, 1, 1] and te.class_names == ["Make Model 99", "Make Model 196"]
    item = tr[0]
    assert torch.allclose(item["bbox"], torch.tensor([2 * 32 / 50, 3 * 32 / 30, 40 * 32 / 50, 25 * 32 / 30]))


def test_cars196_missing_mat_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cars_annos.mat") as exc:
        build_dataset("cars196", "train", tmp_path)
    assert "\n" not in str(exc.value)


# ---------------------------------------------------------------- SOP


def make_sop(root: Path) -> Path:
    sop = root / "Stanford_Online_Products"
    header = "image_id class_id super_class_id path\n"
    train = [(1, 1, 1, "bicycle_final/111_0.JPG"), (2, 1, 1, "bicycle_final/111_1.JPG"),
             (3, 2, 2, "cabinet_final/222_0.JPG"), (4, 2, 2, "cabinet_final/222_1.JPG"),
             (5, 2, 2, "cabinet_final/222_2.JPG")]
    test = [(6, 11319, 1, "bicycle_final/333_0.JPG"), (7, 11319, 1, "bicycle_final/333_1.JPG"),
            (8, 22634, 12, "toaster_final/444_0.JPG"), (9, 22634, 12, "toaster_final/444_1.JPG")]
    for name, rows in (("Ebay_train.txt", train), ("Ebay_test.txt", test)):
        for r in rows:
            _img(sop / r[3], fmt="JPEG")
        (sop / name).parent.mkdir(parents=True, exist_ok=True)
        (sop / name).write_text(header + "".join(" ".join(map(str, r)) + "\n" for r in rows))
    return sop


def test_sop_split_files(tmp_path: Path) -> None:
    make_sop(tmp_path)
    tr = build_dataset("sop", "train", tmp_path)
    te = build_dataset("sop", "test", tmp_path)
    assert tr.labels == [0, 0, 1, 1, 1] and tr.class_names == ["1", "2"]
    assert te.labels == [0, 0, 1, 1] and te.class_names == ["11319", "22634"]
    assert te.super_labels == [1, 1, 12, 12]
    assert te[3]["path"].endswith("toaster_final/444_1.JPG")


def test_sop_bad_header(tmp_path: Path) -> None:
    sop = make_sop(tmp_path)
    (sop / "Ebay_test.txt").write_text("id class path\n1 2 x.jpg\n")
    with pytest.raises(DatasetError, match="Ebay_test.txt: unexpected header"):
        build_dataset("sop", "test", tmp_path)


# ---------------------------------------------------------------- In-Shop


def make_inshop(root: Path) -> Path:
    rows = [("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "id_00000002", "train"),
            ("img/WOMEN/Dresses/id_00000002/02_2_side.jpg", "id_00000002", "train"),
            ("img/MEN/Denim/id_00000007/01_1_front.jpg", "id_00000007", "train"),
            ("img/MEN/Denim/id_00000007/01_2_side.jpg", "id_00000007", "train"),
            ("img/WOMEN/Skirts/id_00000010/01_1_front.jpg", "id_00000010", "query"),
            ("img/WOMEN/Skirts/id_00000010/01_2_side.jpg", "id_00000010", "gallery"),
            ("img/WOMEN/Skirts/id_00000010/01_3_back.jpg", "id_00000010", "gallery"),
            ("img/MEN/Tees/id_00000011/01_1_front.jpg", "id_00000011", "query"),
            ("img/MEN/Tees/id_00000011/01_4_full.jpg", "id_00000011", "gallery"),
            ("img/MEN/Tees/id_00000012/01_1_front.jpg", "id_00000012", "gallery")]
    for r in rows:
        _img(root / r[0], fmt="JPEG")
    (root / "Eval").mkdir(parents=True, exist_ok=True)
    text = f"{len(rows)}\nimage_name item_id evaluation_status\n"
    text += "".join(f"{p}          {i}   {s}\n" for p, i, s in rows)
    (root / "Eval" / "list_eval_partition.txt").write_text(text)
    return root


def test_inshop_query_gallery_share_labels(tmp_path: Path) -> None:
    make_inshop(tmp_path)
    tr = build_dataset("inshop", "train", tmp_path)
    q = build_dataset("inshop", "query", tmp_path)
    g = build_dataset("inshop", "gallery", tmp_path)
    assert (len(tr), len(q), len(g)) == (4, 2, 4)
    assert tr.labels == [0, 0, 1, 1]
    assert q.class_names == g.class_names == ["id_00000010", "id_00000011", "id_00000012"]
    assert q.labels == [0, 1] and g.labels == [0, 0, 1, 2]
    assert q[0]["image"].shape == (3, 224, 224)


def test_unknown_split_and_dataset(tmp_path: Path) -> None:
    make_inshop(tmp_path)
    with pytest.raises(DatasetError, match="unknown split 'test'"):
        build_dataset("inshop", "test", tmp_path)
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'"):
        build_dataset("imagenet", "train", tmp_path)
    with pytest.raises(DatasetError, match="needs data.root"):
        build_dataset("cub200", "train")


# ---------------------------------------------------------------- folder


def test_folder_class_disjoint_halves_and_split_dirs(tmp_path: Path) -> None:
    for c in ("ant", "bee", "cat", "dog"):
        for i in range(2 if c != "dog" else 3):
            _img(tmp_path / "flat" / c / f"{i}.png")
    tr = build_dataset("folder", "train", tmp_path / "flat")
    te = build_dataset("folder", "test", tmp_path / "flat")
    assert tr.class_names == ["ant", "bee"] and te.class_names == ["cat", "dog"]
    assert te.labels == [0, 0, 1, 1, 1]
    assert len(build_dataset("folder", "all", tmp_path / "flat")) == 9
    for split, classes in (("train", ("a", "b")), ("test", ("c",))):
        for c in classes:
            _img(tmp_path / "split" / split / c / "x.jpg", fmt="JPEG")
    assert build_dataset("folder", "test", tmp_path / "split").class_names == ["c"]
    assert build_dataset("folder", "train", tmp_path / "split").labels == [0, 1]


def test_folder_bad_image_names_file(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    ds = build_dataset("folder", "all", tmp_path)
    from dgml_viz.errors import ImageError

    with pytest.raises(ImageError, match="broken.png"):
        ds[0]


# ---------------------------------------------------------------- Fashion-MNIST


def _write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    code = {np.uint8: 0x08}[arr.dtype.type]
    data = bytes([0, 0, code, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape) + arr.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx_fixture(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    for prefix, n in (("train", 40), ("t10k", 20)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{sfx}", images, gz)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{sfx}", labels, gz)
        assert np.array_equal(read_idx(tmp_path / f"{prefix}-images-idx3-ubyte{sfx}"), images)
    tr = build_dataset("fashion_mnist", "train", tmp_path)
    te = FashionMNIST(tmp_path, "test")
    assert len(tr) == 20 and sorted(set(tr.labels)) == [0, 1, 2, 3, 4]
    assert len(te) == 10 and te.class_names[0] == "Sandal"
    all_tr = FashionMNIST(tmp_path, "train", class_split="all", max_per_class=2)
    assert len(all_tr) == 20 and all_tr.labels.count(7) == 2
    item = tr[1]
    assert item["image"].shape == (3, 28, 28) and item["label"] == 1
    raw = read_idx(tmp_path / f"train-images-idx3-ubyte{sfx}")[1].astype(np.float32) / 255
    assert torch.allclose(item["image"][0], (torch.from_numpy(raw) - 0.286) / 0.353, atol=1e-4)


def test_idx_corrupt(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(DatasetError, match="does not match its header"):
        read_idx(tmp_path / "x")
    (tmp_path / "y").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DatasetError, match="bad magic"):
        read_idx(tmp_path / "y")


@pytest.mark.skipif(not DEFAULT_ROOT.is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_fashion_mnist_debian_files() -> None:
    tr = FashionMNIST(split="train")
    te = FashionMNIST(split="test")
    assert len(tr) == 30000 and len(te) == 5000
    assert np.bincount(tr.labels).tolist() == [6000] * 5


def test_registry_lists_everything() -> None:
    assert {"cub200", "cars196", "sop", "inshop", "folder", "fashion_mnist", "synthetic"} <= set(list_datasets())


def test_bad_dataset_kwargs_are_config_errors(tmp_path: Path) -> None:
    make_sop(tmp_path)
    with pytest.raises(ConfigError, match="dataset 'sop': bad arguments \\['colour'"):
        build_dataset("sop", "train", tmp_path, colour=True)
