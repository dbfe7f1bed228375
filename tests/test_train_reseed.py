"""Re-seeding a duplicated group (train.reseed_overlap): the detection on known maps, the per-group
temperature of the head, and the trainer (only the chosen group changes, the ramp, exact resume)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from dgml_viz.errors import ConfigError
from dgml_viz.model.heads.attentive import AttentiveHead
from dgml_viz.model.heads.gate import GateHead
from dgml_viz.train import train
from dgml_viz.train.loop import load_state
from dgml_viz.train.reseed import (Reseed, check_reseedable, find_duplicate, group_temperatures, less_peaked,
                                   most_overlapping_pair)
from test_train_loop import Killed, kill_after, make_folder, tiny_config


def one_hot_maps(n: int, cells: list[tuple[int, int]], size: int = 16) -> torch.Tensor:
    """``[n, K, size, size]``: group k puts all its mass on ``cells[k]`` in every image."""
    a = torch.zeros(n, len(cells), size, size)
    for k, (y, x) in enumerate(cells):
        a[:, k, y, x] = 1.0
    return a


def test_neighbouring_cells_are_a_duplicate_only_once_blurred() -> None:
    # groups 0 and 1 on neighbouring cells of one object (no shared cell), group 2 far away
    a = one_hot_maps(4, [(5, 5), (5, 6), (12, 12)])
    i, j, ov = most_overlapping_pair(a, radius=2)
    # blurred over 5x5 each one-hot map is 1/25 on 25 cells; shifted by one column they share 20 of them
    assert (i, j) == (0, 1) and ov == pytest.approx(20 / 25)
    assert find_duplicate(a, radius=0, threshold=0.3, epoch=8) is None  # unblurred they share nothing
    found = find_duplicate(a, radius=2, threshold=0.3, epoch=8)
    assert found is not None and {found.group, found.partner} == {0, 1} and found.epoch == 8
    # far-apart groups (beyond the blur) are no duplicates
    assert find_duplicate(one_hot_maps(4, [(2, 2), (2, 10), (12, 6)]), radius=2, threshold=0.3, epoch=8) is None


def test_the_less_peaked_group_is_reseeded() -> None:
    a = one_hot_maps(3, [(5, 5), (5, 6), (12, 12)])
    a[:, 0] = 0.5 * a[:, 0] + 0.5 / 256  # group 0: half its mass spread over the grid
    assert less_peaked(a, 0, 1) == 0 and less_peaked(a, 1, 0) == 0
    assert less_peaked(a, 1, 2) == 2  # equally peaked: the later group
    found = find_duplicate(a, radius=2, threshold=0.3, epoch=9)
    assert found == Reseed(epoch=9, group=0, partner=1, overlap=found.overlap)
    assert Reseed.from_dict(found.to_dict()) == found


def test_group_temperatures_ramp_back_to_the_schedule() -> None:
    r = [Reseed(epoch=8, group=2, partner=0, overlap=0.5)]
    got = [group_temperatures(1.0, r, e, 4.0, 3, 3) for e in range(7, 12)]
    assert got[0] == 1.0 and got[4] == 1.0  # before the re-seed, and once the ramp is over
    assert [g.tolist() for g in got[1:4]] == [[1.0, 1.0, 4.0], [1.0, 1.0, 3.0], [1.0, 1.0, 2.0]]
    # never below the schedule's own temperature
    assert group_temperatures(4.5, r, 9, 4.0, 3, 3) == 4.5
    assert group_temperatures(3.5, r, 10, 4.0, 3, 3).tolist() == pytest.approx([3.5, 3.5, 4.0 - 0.5 * 2 / 3])


def test_per_group_temperature_equals_each_group_at_its_own_scalar() -> None:
    torch.manual_seed(0)
    head = AttentiveHead(32, groups=3, dim=24, reduction=4).eval()
    x = torch.randn(2, 32, 6, 7)
    temps = torch.tensor([1.0, 4.0, 2.5])
    head.temperature = temps
    batched = head(x).attention
    for g, t in enumerate(temps.tolist()):
        head.temperature = t
        torch.testing.assert_close(batched[:, g], head(x).attention[:, g], rtol=0, atol=1e-7)


def test_reset_group_redraws_one_query_only() -> None:
    head = AttentiveHead(32, groups=3, dim=24, reduction=4)
    before = head.queries.detach().clone()
    params = head.reset_group(1, torch.Generator().manual_seed(5))
    assert params == [head.queries]
    after = head.queries.detach()
    assert torch.equal(after[[0, 2]], before[[0, 2]]) and not torch.equal(after[1], before[1])
    bound = 1.0 / 8 ** 0.5  # the init distribution: uniform(-1/sqrt(hidden), 1/sqrt(hidden)), hidden = 8
    assert float(after[1].abs().max()) <= bound
    other = AttentiveHead(32, groups=3, dim=24, reduction=4)
    other.reset_group(1, torch.Generator().manual_seed(5))
    assert torch.equal(other.queries[1], after[1])  # the generator decides the draw


def test_config_checks_are_one_line(caplog: pytest.LogCaptureFixture) -> None:
    cfg = {"reseed_overlap": 0.3, "reseed_epochs": [8], "epochs": 12}
    with pytest.raises(ConfigError, match="head GateHead cannot reset a group") as e:
        check_reseedable(GateHead(64, groups=3, dim=48), cfg)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="reseed_epochs is empty"):
        check_reseedable(AttentiveHead(64), {**cfg, "reseed_epochs": []})
    with caplog.at_level(logging.WARNING, logger="dgml_viz.train.reseed"):
        check_reseedable(AttentiveHead(64), {**cfg, "reseed_epochs": [8, 12, 14]})  # a shortened run: warned
    assert "no duplicate check after epoch(s) 12, 14" in caplog.text
    check_reseedable(GateHead(64, groups=3, dim=48), {**cfg, "reseed_overlap": None})  # off: any head


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("folder"))


def reseed_config(root: Path, **over: Any) -> dict[str, Any]:
    items = {"train.epochs": 4, "train.steps_per_epoch": 2, "train.lr_steps": [3], "eval.nmi": False,
             "train.eval_every": 4, "train.tensorboard": False, "train.attention_start_epoch": 1,
             "train.attention_warmup_epochs": 1, "train.attention_temperature_early": 4.0,
             "train.reseed_overlap": 0.0, "train.reseed_epochs": [2], "train.reseed_warmup_epochs": 2,
             "train.reseed_probe_images": 8}
    items.update(over)
    return tiny_config(root, **items)


def test_trainer_reseeds_one_group_ramps_it_and_resumes_exactly(folder: Path, tmp_path: Path) -> None:
    seen: dict[str, dict[int, Any]] = {"on": {}, "off": {}}

    def spy(key: str):
        def f(epoch: int, model: torch.nn.Module, row: dict) -> None:
            seen[key][epoch] = (model.head.queries.detach().clone(), model.head.temperature, dict(row))
        return f

    on = train(reseed_config(folder), tmp_path / "on", on_epoch_end=spy("on"))
    train(reseed_config(folder, **{"train.reseed_overlap": None}), tmp_path / "off", on_epoch_end=spy("off"))
    state = load_state(tmp_path / "on" / "last_state.pt")
    assert len(state["reseeds"]) == 1
    r = Reseed.from_dict(state["reseeds"][0])
    assert r.epoch == 2 and 0 <= r.group < 3 and r.overlap > 0
    row = seen["on"][2][2]
    assert row["reseeded_group"] == r.group and row["reseed_overlap"] == pytest.approx(r.overlap)
    assert "reseeded_group" not in seen["off"][2][2]
    # up to the re-seed both runs are the same; then only the chosen group's query differs
    q_on, q_off = seen["on"][2][0], seen["off"][2][0]
    keep = [g for g in range(3) if g != r.group]
    assert torch.equal(q_on[keep], q_off[keep]) and not torch.equal(q_on[r.group], q_off[r.group])
    # epoch 3 (0-based 2) ran the re-seeded group soft, the others at the schedule's 1
    t3 = seen["on"][3][1]
    assert isinstance(t3, torch.Tensor) and t3[r.group] == 4.0 and all(t3[g] == 1.0 for g in keep)
    assert seen["off"][3][1] == 1.0

    with pytest.raises(Killed):
        train(reseed_config(folder), tmp_path / "cut", on_epoch_end=kill_after(2))
    resumed = train(reseed_config(folder), tmp_path / "cut", resume=True)
    a, b = load_state(tmp_path / "on" / "last_state.pt"), load_state(tmp_path / "cut" / "last_state.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k  # the resumed run replayed the soft group
    assert a["reseeds"] == b["reseeds"]
    assert [h["loss"] for h in on["history"]] == [h["loss"] for h in resumed["history"]]


def test_a_head_without_queries_is_refused_before_training(folder: Path, tmp_path: Path) -> None:
    cfg = reseed_config(folder, **{"model.head": "gate", "train.attention_temperature_early": 1.0})
    with pytest.raises(ConfigError, match="cannot reset a group"):
        train(cfg, tmp_path / "gate")
