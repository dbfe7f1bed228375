"""``maps.npz`` keeps its format: ``npz_bytes`` produces the very bytes ``np.savez`` writes, and ``np.load``
reads them back as written."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from dgml_viz.commands.heatmaps import npz_bytes


def _savez(**arrays: object) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize("k,h,w,d", [(3, 16, 16, 96), (1, 1, 1, 1), (5, 7, 9, 170), (0, 4, 4, 0)])
def test_npz_bytes_are_np_savez_bytes(k: int, h: int, w: int, d: int) -> None:
    rng = np.random.default_rng(k + h)
    arrays = {"attention": rng.random((k, h, w), dtype=np.float32), "embedding": rng.random(k * d, dtype=np.float32),
              "geometry": np.array(json.dumps({"original": [640, 427], "crop": [16, 0], "mode": "center_crop"})),
              "path": np.array("sub dir/ünïcode image.jpg")}
    data = npz_bytes(**arrays)
    assert data == _savez(**arrays)
    with np.load(io.BytesIO(data)) as z:
        assert z.files == list(arrays)
        for name, value in arrays.items():
            assert z[name].dtype == value.dtype and np.array_equal(z[name], value)


def test_other_dtypes_and_non_contiguous_arrays() -> None:
    base = np.arange(60, dtype=np.float64).reshape(3, 4, 5)
    arrays = {"f64_view": base[:, ::2], "fortran": np.asfortranarray(base), "i64": np.arange(7),
              "u8": np.zeros((2, 3), np.uint8), "big_endian": np.arange(4, dtype=">i4"), "scalar": np.array(1.5, np.float16), "b": np.array([True])}
    assert npz_bytes(**arrays) == _savez(**arrays)
    with pytest.raises(ValueError, match="object"):
        npz_bytes(x=np.array([{}], dtype=object))
