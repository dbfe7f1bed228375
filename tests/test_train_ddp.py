"""Two-process DDP training on CPU (gloo): both ranks stay in sync while seeing different batches."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))

from test_train_loop import make_folder, tiny_config  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    import os

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    from dgml_viz.train import train

    cfg = tiny_config(Path(root), **{"train.epochs": 2, "train.steps_per_epoch": 2, "train.device": "cpu",
                                     "eval.nmi": False, "train.eval_every": 2})

    def dump(epoch: int, model: torch.nn.Module, row: dict) -> None:
        torch.save({"model": {k: v.clone() for k, v in model.state_dict().items()}, "loss": row["loss"]},
                   Path(out) / f"rank{rank}_epoch{epoch}.pt")

    result = train(cfg, Path(out) / "run", on_epoch_end=dump)
    torch.save({"steps": result["steps"], "metrics": result["metrics"]}, Path(out) / f"rank{rank}_result.pt")


@pytest.mark.timeout(300)
def test_two_process_gloo_ranks_stay_in_sync(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data")
    mp.spawn(_worker, args=(2, _free_port(), str(root), str(tmp_path)), nprocs=2, join=True)
    for epoch in (1, 2):
        a = torch.load(tmp_path / f"rank0_epoch{epoch}.pt", weights_only=True)
        b = torch.load(tmp_path / f"rank1_epoch{epoch}.pt", weights_only=True)
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), (epoch, k)
        assert a["loss"] != b["loss"]  # different (disjoint) batches per rank
    r0 = torch.load(tmp_path / "rank0_result.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1_result.pt", weights_only=True)
    assert r0["steps"] == r1["steps"] == 4
    assert "recall@1" in r0["metrics"] and r1["metrics"] == {}  # rank 0 evaluates
    # the parameters moved away from the shared initialisation
    from dgml_viz.train.loop import build_model, _seed_everything

    cfg = tiny_config(root)
    _seed_everything(cfg["train"]["seed"], -1, 0)
    init = build_model(cfg).state_dict()
    final = torch.load(tmp_path / "rank0_epoch2.pt", weights_only=True)["model"]
    assert not torch.equal(init["head.queries"], final["head.queries"])
    assert (tmp_path / "run" / "best.pt").is_file()
