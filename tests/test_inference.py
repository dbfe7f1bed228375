"""The one inference loop: batched == per-sample, batch dicts keep their fields, training flag restored."""
from __future__ import annotations

import pytest
import torch

from dgml_viz.inference import batched, infer
from dgml_viz.model import create_model, list_heads


@pytest.mark.parametrize("head", list_heads())
def test_infer_in_chunks_equals_one_sample_at_a_time(head: str) -> None:
    model = create_model("small_cnn", head=head, groups=3, dim=48, width=8).train()
    x = torch.randn(7, 3, 40, 48)
    out = infer(model, batched(x, 3))
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        ref = [model(x[i:i + 1]) for i in range(len(x))]
    torch.testing.assert_close(out.groups, torch.cat([r.groups for r in ref]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.embedding, torch.cat([r.embedding for r in ref]), atol=1e-5, rtol=1e-5)
    if ref[0].attention is None:
        assert out.attention is None
    else:
        torch.testing.assert_close(out.attention, torch.cat([r.attention for r in ref]), atol=1e-6, rtol=1e-5)
    assert out.embedding.device.type == "cpu" and out.embedding.dtype == torch.float32


def test_batch_dicts_keep_the_asked_fields() -> None:
    model = create_model("small_cnn", groups=2, dim=16, width=8)
    batches = [{"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([0, 1]), "path": ["a", "b"]},
               {"image": torch.randn(1, 3, 32, 32), "label": torch.tensor([2])}]
    out = infer(model, batches, extras=("label", "part_masks"))
    assert out.extras["label"].tolist() == [0, 1, 2] and "part_masks" not in out.extras


def test_no_batches_is_an_error() -> None:
    with pytest.raises(ValueError, match="no images"):
        infer(create_model("small_cnn", groups=2, dim=16, width=8), [])
