"""The training loop: class-balanced batches, grouped metric loss, periodic evaluation.

``train(config, run_dir, resume=False)`` writes into ``run_dir``:

==================  ==============================================================
``config.yaml``     the resolved recipe
``last.pt``         checkpoint after the latest epoch (``save_checkpoint`` format)
``best.pt``         checkpoint with the best ``train.checkpoint_metric`` so far
``last_state.pt``   resumable state (weights, optimizer, scheduler, loss betas,
                    epoch/step counters, history); plain tensors/dicts, loaded
                    with ``weights_only=True``
``log.csv``         one row per epoch (rewritten atomically; losses are rank 0's)
``curves.png``      loss and retrieval curves (redrawn after each evaluation)
``metrics.json``    metrics of the final evaluation
``tb/``             TensorBoard logs, ``timeline.npz`` + ``attention_timeline.{png,pdf}``
                    (rank 0, ``train.tensorboard``; :mod:`dgml_viz.train.logging_tb`)
==================  ==============================================================

Determinism: the global RNGs are re-seeded at the start of every epoch from
``(seed, epoch, rank)`` and the sampler plans each epoch from ``seed + epoch``,
so a run resumed from ``last_state.pt`` replays exactly what the uninterrupted
run would have done (bit-exact on CPU).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from dgml_viz.data.registry import build_dataset, dataset_spec
from dgml_viz.data.sampler import ClassBalancedBatchSampler
from dgml_viz.data.train_transforms import build_transforms
from dgml_viz.errors import CheckpointError, ConfigError, DatasetError
from dgml_viz.inference import autocast, infer, model_device
from dgml_viz.model.checkpoint import check_state_fits
from dgml_viz.model.heads.registry import spatial_maps
from dgml_viz.metrics.retrieval import retrieval_metrics
from dgml_viz.train.config import config_from_dict, dump_config
from dgml_viz.train.distributed import (
    DistInfo,
    average_gradients,
    barrier,
    broadcast_buffers,
    cleanup,
    init_distributed,
)
from dgml_viz.train.losses import GroupedMetricLoss, MetricSpec
from dgml_viz.train.reseed import Reseed, check_reseedable, find_duplicate, group_temperatures
from dgml_viz.train.terms import (ConsistencyTerm, DiversityTerm, EntropyTerm, LossTerm, OverlapTerm, SpreadTerm,
                                  WeightSchedule)
from dgml_viz.utils.atomic import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

STATE_FORMAT = "dgml_viz.train_state"


# --------------------------------------------------------------------------- data


def collate_items(items: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
    """Stack only what training/evaluation needs: ``{"image": [B,3,H,W], "label": [B]}``."""
    return {"image": torch.stack([it["image"] for it in items]),
            "label": torch.tensor([int(it["label"]) for it in items], dtype=torch.long)}


def dataset_labels(ds: Dataset) -> list[int]:
    """Labels of every item: the dataset's ``labels`` attribute, else read item by item."""
    labels = getattr(ds, "labels", None)
    if labels is not None:
        return [int(v) for v in (labels.tolist() if isinstance(labels, Tensor) else labels)]
    logger.info("dataset has no .labels attribute; reading %d items for their labels", len(ds))
    return [int(ds[i]["label"]) for i in range(len(ds))]


def build_datasets(config: dict[str, Any]) -> tuple[Dataset, Dataset, Dataset | None, dict[str, Any]]:
    """``(train, test/query, gallery or None, eval transform dict)`` from a resolved config.

    The transform dict (stored in checkpoints) is the test dataset's own
    ``transform`` when that is a dict (datasets that produce tensors), else the
    :class:`EvalTransform` built from ``data``.
    """
    data = config["data"]
    spec = dataset_spec(data["name"])
    train_tf, eval_tf = build_transforms(data)
    kwargs = dict(data.get("kwargs") or {})

    def make(split: str, tf: Any) -> Dataset:
        extra = {"transform": tf} if spec.takes_transform else {}
        return build_dataset(data["name"], split, data.get("root"), **extra, **kwargs)

    train_ds = make(data["train_split"], train_tf)
    test_ds = make(data["test_split"], eval_tf)
    gallery_ds = make(data["gallery_split"], eval_tf) if data.get("gallery_split") else None
    own = getattr(test_ds, "transform", None)  # tensor datasets may describe their own preprocessing
    transform = dict(own) if isinstance(own, dict) else eval_tf.as_dict()
    return train_ds, test_ds, gallery_ds, transform


# --------------------------------------------------------------------------- optimisation


def build_param_groups(model: nn.Module, loss: nn.Module | None, train_cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Optimizer groups chosen by module, never by parameter-name substrings.

    * ``backbone``: ``model.backbone`` parameters, weight decay ``weight_decay.backbone``,
      lr ``lr_backbone`` (default ``lr``); with ``layer_decay`` set and a backbone that
      declares ``layer_ids()`` (timm ViTs, from timm's own ``group_matcher``), one group
      ``backbone.<i>`` per depth ``i`` with lr ``lr_backbone * layer_decay ** (depths - 1 - i)``
      (embeddings lowest, the last block at ``lr_backbone``);
    * ``keyval``: ``model.head`` parameters except the queries (all head
      parameters for heads without queries), ``weight_decay.keyval``;
    * ``query``: the attentive head's ``queries`` Parameter, ``weight_decay.query``,
      lr ``lr_query`` (default ``lr``);
    * ``loss``: the loss's learnable betas, lr ``beta_lr``, no weight decay.

    Only trainable parameters are included; each exactly once.
    """
    net = getattr(model, "module", model)
    wd = train_cfg["weight_decay"]
    lr = float(train_cfg["lr"])
    lr_bb = float(train_cfg["lr_backbone"]) if train_cfg.get("lr_backbone") is not None else lr
    lr_q = float(train_cfg["lr_query"]) if train_cfg.get("lr_query") is not None else lr
    queries = getattr(net.head, "queries", None)
    query_params = [queries] if isinstance(queries, nn.Parameter) and queries.requires_grad else []
    qids = {id(p) for p in query_params}
    backbone = [p for p in net.backbone.parameters() if p.requires_grad]
    head = [p for p in net.head.parameters() if p.requires_grad and id(p) not in qids]
    seen = {id(p) for p in backbone + head + query_params}
    rest = [p for p in net.parameters() if p.requires_grad and id(p) not in seen]
    if rest:
        raise ConfigError(f"model has {len(rest)} trainable parameter(s) outside backbone and head")
    groups = _layer_decay_groups(net.backbone, backbone, lr_bb, float(wd["backbone"]), train_cfg.get("layer_decay"))
    groups.append({"name": "keyval", "params": head, "lr": lr, "weight_decay": float(wd["keyval"])})
    if query_params:
        groups.append({"name": "query", "params": query_params, "lr": lr_q, "weight_decay": float(wd["query"])})
    if loss is not None:
        loss_params = [p for p in loss.parameters() if p.requires_grad]
        if loss_params:
            groups.append({"name": "loss", "params": loss_params, "lr": float(train_cfg["beta_lr"]),
                           "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def _layer_decay_groups(backbone: nn.Module, params: list[nn.Parameter], lr: float, weight_decay: float,
                        decay: float | None) -> list[dict[str, Any]]:
    """The backbone's optimizer group(s): one, or one per declared depth under layer-wise lr decay."""
    if decay is None or float(decay) == 1.0:
        return [{"name": "backbone", "params": params, "lr": lr, "weight_decay": weight_decay}]
    if not 0.0 < float(decay) <= 1.0:
        raise ConfigError(f"train.layer_decay must be in (0, 1] or null, got {decay!r}")
    layer_ids = getattr(backbone, "layer_ids", None)
    if layer_ids is None:
        raise ConfigError(f"train.layer_decay: backbone {type(backbone).__name__} declares no layer depths; "
                          "set train.layer_decay=null")
    ids, depths = layer_ids()
    name_of = {id(p): n for n, p in backbone.named_parameters()}
    by_depth: dict[int, list[nn.Parameter]] = {}
    for p in params:
        by_depth.setdefault(int(ids.get(name_of[id(p)], depths - 1)), []).append(p)
    return [{"name": f"backbone.{i}", "params": ps, "lr": lr * float(decay) ** (depths - 1 - i),
             "weight_decay": weight_decay} for i, ps in sorted(by_depth.items())]


def loss_terms(train_cfg: dict[str, Any]) -> list[LossTerm]:
    """The recipe's regularising terms, each with its weight schedule (:mod:`dgml_viz.train.terms`).

    The attention terms (``lambda_ent``, ``lambda_overlap``, ``lambda_spread``) are off before
    ``attention_start_epoch`` S, then ramp linearly over ``attention_warmup_epochs`` W. The
    diversity term is ``lambda_div`` throughout, or — with ``lambda_div_early`` set — that weaker
    weight while the attention terms are off, ramping to ``lambda_div`` with them (a weak diversity
    term lets the plain phase learn every part; the strong one, with the attention terms, then
    pulls the groups apart). With S = 0 and W > 0 the first epoch trains without the attention
    terms, so features and keys form before attention is asked to concentrate and to separate.
    """
    t = train_cfg
    early = t.get("lambda_div_early")
    div = WeightSchedule.constant(t["lambda_div"]) if early is None else attention_ramp(t, t["lambda_div"], early)
    return [DiversityTerm(div, alpha=t["div_alpha"], beta=t["div_beta"], c=t["div_c"]),
            EntropyTerm(attention_ramp(t, t.get("lambda_ent", 0.0))),
            OverlapTerm(attention_ramp(t, t.get("lambda_overlap", 0.0)), radius=int(t.get("overlap_radius", 0))),
            SpreadTerm(attention_ramp(t, t.get("lambda_spread", 0.0))),
            ConsistencyTerm(attention_ramp(t, t.get("lambda_consistency", 0.0), t.get("lambda_consistency_early") or 0.0),
                            view=t.get("consistency_view", "rot180"), images=int(t.get("consistency_images", 16)))]


def attention_ramp(train_cfg: dict[str, Any], weight: float, early: float = 0.0) -> WeightSchedule:
    """``early`` before ``attention_start_epoch``, then a linear ramp to ``weight`` over
    ``attention_warmup_epochs``: the one phase every scheduled quantity of a recipe follows."""
    return WeightSchedule(float(weight), int(train_cfg.get("attention_start_epoch", 0) or 0),
                          int(train_cfg.get("attention_warmup_epochs", 0) or 0), float(early))


def temperature_schedule(train_cfg: dict[str, Any], head: nn.Module) -> WeightSchedule | None:
    """The attention temperature per epoch: ``attention_temperature_early`` T before
    ``attention_start_epoch``, ramping to 1 with the attention terms; ``None`` when T = 1 (off).

    A soft softmax (T > 1) keeps a group from locking onto the first part the backbone learns
    while the plain phase is still learning the others. Needs a head with a ``temperature``
    (:class:`~dgml_viz.model.heads.attentive.AttentiveHead`); one-line ConfigError otherwise.
    """
    early = float(train_cfg.get("attention_temperature_early", 1.0) or 1.0)
    if early == 1.0:
        return None
    if not hasattr(head, "temperature"):
        raise ConfigError(f"train.attention_temperature_early={early}: head {type(head).__name__} has no "
                          "attention temperature; set it to 1")
    schedule = attention_ramp(train_cfg, 1.0, early)
    reaches_one = schedule.start_epoch + schedule.warmup_epochs
    if reaches_one > int(train_cfg["epochs"]) - 1:  # the saved model (temperature 1) must be the one evaluated
        raise ConfigError(f"train.attention_temperature_early={early}: the temperature reaches 1 only in epoch "
                          f"{reaches_one + 1} (attention_start_epoch + attention_warmup_epochs + 1) but training "
                          f"stops after epoch {train_cfg['epochs']}")
    return schedule


def build_loss(config: dict[str, Any], num_groups: int, num_classes: int) -> GroupedMetricLoss:
    """The recipe's loss: :class:`MetricSpec` from ``train.loss`` & co., :func:`loss_terms`."""
    t = config["train"]
    metric = MetricSpec(kind=t["loss"], margin=t["margin"], beta_init=t["beta_init"], cutoff=t["cutoff"],
                        nonzero_loss_cutoff=t["nonzero_loss_cutoff"], ms_alpha=t["ms_alpha"], ms_beta=t["ms_beta"],
                        ms_base=t["ms_base"], ms_epsilon=t["ms_epsilon"], on=t.get("metric_on", "groups"))
    return GroupedMetricLoss(num_groups, num_classes, metric, loss_terms(t))


def build_model(config: dict[str, Any]) -> nn.Module:
    from dgml_viz.model import create_model

    m = config["model"]
    return create_model(backbone=m["backbone"], groups=m["groups"], dim=m["dim"], head=m["head"],
                        reduction=m["reduction"], pretrained=m["pretrained"], freeze_bn=m["freeze_bn"],
                        **(m.get("backbone_kwargs") or {}))


# --------------------------------------------------------------------------- evaluation


def compute_embeddings(model: nn.Module, dataset: Dataset, batch_size: int = 128, num_workers: int = 0,
                       amp: bool = True, channels_last: bool = False, progress: bool = False
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """Embed a dataset: ``(embedding [N, K*d], groups [N, K, d], labels [N])`` float32 on CPU
    (the one inference loop, :func:`dgml_viz.inference.infer`)."""
    device = model_device(getattr(model, "module", model))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_items, pin_memory=device.type == "cuda")
    out = infer(model, loader, extras=("label",), amp=amp, channels_last=channels_last, progress=progress)
    return out.embedding, out.groups, out.extras["label"]


def evaluate_model(model: nn.Module, query: Dataset, gallery: Dataset | None = None,
                   eval_cfg: dict[str, Any] | None = None, *, num_workers: int = 0, amp: bool = True,
                   seed: int = 0, progress: bool = False) -> dict[str, float]:
    """Retrieval metrics of ``model`` on ``query`` (vs itself, or vs ``gallery``)."""
    cfg = {"ks": [1, 2, 4, 8], "nmi": True, "batch_size": 128, "chunk": 2048, **(eval_cfg or {})}
    emb, grp, lab = compute_embeddings(model, query, cfg["batch_size"], num_workers, amp, progress=progress)
    g_emb = g_grp = g_lab = None
    if gallery is not None:
        g_emb, g_grp, g_lab = compute_embeddings(model, gallery, cfg["batch_size"], num_workers, amp,
                                                 progress=progress)
    return retrieval_metrics(emb, lab, groups=grp, ks=cfg["ks"], gallery=g_emb, gallery_labels=g_lab,
                             gallery_groups=g_grp, compute_nmi=bool(cfg["nmi"]), seed=seed, chunk=cfg["chunk"])


# --------------------------------------------------------------------------- logging


def loss_column(term: str) -> str:
    """log.csv column of a loss term: ``"loss"`` for ``"total"``, else ``"<term>_loss"``."""
    return "loss" if term == "total" else f"{term}_loss"


def write_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite the per-epoch log atomically (columns: union of keys, first-seen order)."""
    import csv
    import io

    cols: list[str] = []
    for row in history:
        cols += [k for k in row if k not in cols]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, restval="")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buf.getvalue())


def plot_curves(path: Path, history: list[dict[str, Any]]) -> None:
    """Loss and retrieval curves as a PNG (matplotlib, Agg backend)."""
    from matplotlib.figure import Figure

    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 3.5), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    ep = [r["epoch"] for r in history]
    for key in ("loss", "metric_loss"):
        ax1.plot(ep, [r.get(key, math.nan) for r in history], marker=".", label=key)
    ax_div = ax1.twinx()  # the unweighted diversity term lives on its own scale
    ax_div.plot(ep, [r.get("div_loss", math.nan) for r in history], marker=".", color="tab:green",
                linestyle="--", label="div_loss (right axis)")
    ax_div.set_ylabel("diversity")
    ax1.set_xlabel("epoch")
    ax1.set_title("training loss")
    handles = ax1.get_legend_handles_labels()[0] + ax_div.get_legend_handles_labels()[0]
    ax1.legend(handles=handles, fontsize="small")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    evals = [r for r in history if "recall@1" in r]
    for key in ("recall@1", "map@r", "nmi"):
        pts = [(r["epoch"], r[key]) for r in evals if key in r]
        if pts:
            ax2.plot(*zip(*pts), marker="o", label=key)
    ax2.set_xlabel("epoch")
    ax2.set_title("test retrieval")
    if evals:
        ax2.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


# --------------------------------------------------------------------------- state


def _seed_everything(seed: int, epoch: int, rank: int) -> None:
    s = (int(seed) * 1_000_003 + epoch * 1009 + rank) % (2**31 - 1)
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s)


def _save_state(path: Path, **state: Any) -> None:
    sched = dict(state["scheduler"])
    if "milestones" in sched:  # Counter -> plain dict (weights_only loading)
        sched["milestones"] = {int(k): int(v) for k, v in sched["milestones"].items()}
    state["scheduler"] = sched
    with atomic_path(path) as tmp:
        torch.save({"format": STATE_FORMAT, **state}, tmp)


def load_state(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read ``last_state.pt`` (weights_only); one-line error if unreadable."""
    from dgml_viz.errors import CheckpointError

    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read is reported as one line
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot read training state ({msg})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a dgml_viz training state")
    return state


# --------------------------------------------------------------------------- training


class _Trainer:
    def __init__(self, config: dict[str, Any], run_dir: Path, info: DistInfo,
                 on_epoch_end: Callable[[int, nn.Module, dict[str, Any]], None] | None) -> None:
        self.cfg, self.run_dir, self.info, self.on_epoch_end = config, run_dir, info, on_epoch_end
        t = config["train"]
        self.device = info.device
        self.cuda = self.device.type == "cuda"
        self.amp = bool(t["amp"]) and self.cuda
        self.channels_last = bool(t["channels_last"]) and self.cuda
        self.progress = bool(t["progress"]) and info.is_main
        self.monitor: Any = None  # TrainingMonitor on rank 0 with train.tensorboard (created in run)
        self.last_terms: dict[str, float] = {}
        self.last_lrs: dict[str, float] = {}

    # -- setup
    def setup(self) -> None:
        cfg, t = self.cfg, self.cfg["train"]
        if t["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.train_ds, self.test_ds, self.gallery_ds, self.transform = build_datasets(cfg)
        labels = dataset_labels(self.train_ds)
        if not labels:
            raise DatasetError(f"dataset {cfg['data']['name']!r}: training split is empty")
        if min(labels) < 0:
            raise DatasetError(f"dataset {cfg['data']['name']!r}: negative class labels")
        self.num_classes = max(labels) + 1
        self.class_names = getattr(self.train_ds, "class_names", None)
        _seed_everything(t["seed"], -1, 0)  # same initial weights on every rank
        self.model = build_model(cfg).to(self.device)
        self.model.transform = dict(self.transform)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss = build_loss(cfg, self.model.num_groups, self.num_classes).to(self.device)
        self.temperature = temperature_schedule(t, self.model.head)
        check_reseedable(self.model.head, t)
        self.reseeds: list[Reseed] = []
        self._probe: Tensor | None = None
        #: flipped copies are only worth a forward when the head has maps a view term can compare
        self.has_maps = spatial_maps(self.model.head) is not None
        self.optimizer = torch.optim.Adam(build_param_groups(self.model, self.loss, t))
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=list(t["lr_steps"]),
                                                              gamma=float(t["gamma"]))
        self.net: nn.Module = self.model
        if self.info.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(self.model, device_ids=[self.device.index] if self.cuda else None)
        if t["compile"]:
            self.net = torch.compile(self.net)
        self.sampler = ClassBalancedBatchSampler(labels, t["batch_classes"], t["batch_per_class"], seed=t["seed"],
                                                 rank=self.info.rank, world_size=self.info.world_size,
                                                 num_batches=t["steps_per_epoch"])
        self.loader = DataLoader(self.train_ds, batch_sampler=self.sampler, num_workers=int(t["num_workers"]),
                                 collate_fn=collate_items, pin_memory=self.cuda,
                                 persistent_workers=False)
        self.epoch, self.step = 0, 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"value": None, "epoch": None, "metrics": {}}
        self.last_metrics: dict[str, float] = {}

    def restore(self, state: dict[str, Any], source: Path) -> None:
        check_state_fits(self.model, state["model"], f"{source} (model)")
        check_state_fits(self.loss, state["loss"], f"{source} (loss)")
        self.model.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        sched = dict(state["scheduler"])
        if "milestones" in sched:
            from collections import Counter

            sched["milestones"] = Counter({int(k): int(v) for k, v in sched["milestones"].items()})
        self.scheduler.load_state_dict(sched)
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state["history"])
        self.best = dict(state["best"])
        self.last_metrics = dict(state.get("last_metrics") or {})
        self.reseeds = [Reseed.from_dict(d) for d in state.get("reseeds") or []]
        if state.get("rng_torch") is not None:
            torch.set_rng_state(state["rng_torch"])
        logger.info("resumed %s at epoch %d (step %d)", self.run_dir, self.epoch, self.step)

    def set_temperature(self, epoch: int) -> None:
        """The head's attention temperature for 0-based ``epoch`` (:func:`temperature_schedule`; a re-seeded
        group's own ramp, :func:`~dgml_viz.train.reseed.group_temperatures`)."""
        base = self.temperature(epoch) if self.temperature is not None else None
        if self.reseeds:
            t = self.cfg["train"]
            base = group_temperatures(1.0 if base is None else base, self.reseeds, epoch,
                                      float(t["attention_temperature_early"]), int(t["reseed_warmup_epochs"]),
                                      self.model.num_groups)
        if base is not None:
            self.model.head.temperature = base

    # -- re-seeding a duplicated group (train.reseed_overlap; dgml_viz.train.reseed)
    def reseed_probe(self) -> Tensor:
        """``[M, 3, H, W]`` fixed training images on the CPU (evenly spaced, drawn under a fixed seed so every
        rank and every call sees the same ones, without touching the training RNG)."""
        if self._probe is None:
            t = self.cfg["train"]
            n = len(self.train_ds)
            m = min(int(t["reseed_probe_images"]), n)
            idx = [i * n // m for i in range(m)]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(t["seed"]))
                self._probe = collate_items([self.train_ds[i] for i in idx])["image"]
        return self._probe

    def maybe_reseed(self) -> Reseed | None:
        """After 1-based epoch ``self.epoch`` of ``train.reseed_epochs``: re-seed the less peaked group of a
        pair whose blurred maps overlap above ``train.reseed_overlap`` (once per run)."""
        t = self.cfg["train"]
        if t["reseed_overlap"] is None or self.reseeds or self.epoch not in t["reseed_epochs"]:
            return None
        head = self.model.head
        saved = head.temperature
        head.temperature = 1.0  # the maps the trained model will have
        try:
            att = infer(self.model, [self.reseed_probe()], amp=self.amp).attention
        finally:
            head.temperature = saved
        assert att is not None  # check_reseedable: the head has maps
        found = find_duplicate(att, int(t["overlap_radius"]), float(t["reseed_overlap"]), self.epoch)
        if found is None:
            return None
        gen = torch.Generator().manual_seed(int(t["seed"]) * 1009 + self.epoch)
        for param in head.reset_group(found.group, gen):
            state = self.optimizer.state.get(param) or {}
            if "exp_avg" in state:  # stale momentum would pull the fresh query back onto the old part
                state["exp_avg"][found.group].zero_()
        self.reseeds.append(found)
        logger.info("epoch %d: groups %d and %d share %.3f of their blurred attention: group %d re-seeded (fresh "
                    "query, temperature %.3g ramping to 1 over %d epochs)", self.epoch, found.partner, found.group,
                    found.overlap, found.group, float(t["attention_temperature_early"]),
                    int(t["reseed_warmup_epochs"]))
        return found

    # -- one epoch
    def train_epoch(self, deadline: float | None) -> tuple[dict[str, float], bool]:
        t = self.cfg["train"]
        self.sampler.set_epoch(self.epoch)
        self.loss.set_epoch(self.epoch)
        self.set_temperature(self.epoch)
        _seed_everything(t["seed"], self.epoch, self.info.rank)
        self.net.train()
        sums: dict[str, Tensor] = {}  # term name -> float64 running sum, whatever terms the loss returns
        n, images_seen, stop = 0, 0, False
        t0 = time.perf_counter()
        bar = tqdm(self.loader, desc=f"epoch {self.epoch + 1}/{t['epochs']}", leave=False,
                   disable=None if self.progress else True)  # None: off when stderr is not a TTY
        loss_params = [p for p in self.loss.parameters() if p.requires_grad]
        for batch in bar:
            images = batch["image"].to(self.device, non_blocking=True)
            labels = batch["label"].to(self.device, non_blocking=True)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            views = self.loss.view_images(images) if self.has_maps else None  # flipped copies a term compares
            with autocast(self.device, self.amp):
                out = self.net(images if views is None else torch.cat([images, views]))
            b, att = len(labels), out.attention
            groups, mine = out.groups[:b].float(), None if att is None else att[:b]
            res = (self.loss(groups, labels, mine) if views is None or att is None  # a loss may not take views
                   else self.loss(groups, labels, mine, att[b:]))
            self.optimizer.zero_grad(set_to_none=True)
            res["total"].backward()
            average_gradients(loss_params, self.info)
            self.optimizer.step()
            for name, value in res.items():
                term = value.detach().double()
                sums[name] = sums[name] + term if name in sums else term
            n += 1
            images_seen += len(images)
            self.step += 1
            if self.progress and n % 10 == 0:
                bar.set_postfix(loss=f"{(sums['total'] / n).item():.4f}")
            if t["max_steps"] is not None and self.step >= t["max_steps"]:
                stop = True
            if deadline is not None and time.perf_counter() >= deadline:
                stop = True
                logger.info("time budget reached at step %d", self.step)
            if stop:
                break
        bar.close()
        broadcast_buffers(self.model, self.info)  # DDP syncs buffers before each forward, not after the last
        dt = time.perf_counter() - t0
        row: dict[str, Any] = {"epoch": self.epoch + 1, "step": self.step}
        row.update({loss_column(name): (total / max(n, 1)).item() for name, total in sums.items()})
        row.update({"lr": self.optimizer.param_groups[0]["lr"], "epoch_time_s": dt,
                    "images_per_s": images_seen * self.info.world_size / dt if dt > 0 else math.nan})
        self.last_terms = {name: row[loss_column(name)] for name in sums}
        self.last_lrs = {str(g.get("name", i)): float(g["lr"]) for i, g in enumerate(self.optimizer.param_groups)}
        self.scheduler.step()
        return row, stop

    def evaluate(self) -> dict[str, float]:
        t = self.cfg["train"]
        return evaluate_model(self.model, self.test_ds, self.gallery_ds, self.cfg["eval"],
                              num_workers=int(t["num_workers"]), amp=self.amp, seed=int(t["seed"]),
                              progress=self.progress)

    def save_checkpoints(self, metrics: dict[str, float], improved: bool) -> None:
        from dgml_viz.model.checkpoint import save_checkpoint

        meta = {"epoch": self.epoch, "step": self.step, "recipe": self.cfg}
        save_checkpoint(self.model, self.run_dir / "last.pt", transform=self.transform,
                        class_names=self.class_names, metrics=metrics, **meta)
        if improved or not (self.run_dir / "best.pt").exists():
            save_checkpoint(self.model, self.run_dir / "best.pt", transform=self.transform,
                            class_names=self.class_names, metrics=metrics, **meta)

    def save_state(self) -> None:
        _save_state(self.run_dir / "last_state.pt", epoch=self.epoch, step=self.step,
                    model={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                    loss={k: v.detach().cpu() for k, v in self.loss.state_dict().items()},
                    optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                    history=self.history, best=self.best, last_metrics=self.last_metrics,
                    reseeds=[r.to_dict() for r in self.reseeds],
                    sampler_epoch=self.sampler.epoch, config=self.cfg, rng_torch=torch.get_rng_state())

    def start_monitor(self) -> None:
        """TensorBoard + probe timeline on rank 0 (``train.tensorboard``); see :mod:`dgml_viz.train.logging_tb`."""
        if self.info.is_main and self.cfg["train"]["tensorboard"]:
            from dgml_viz.train.logging_tb import TrainingMonitor

            self.monitor = TrainingMonitor(self.run_dir, self.test_ds, self.transform,
                                           seed=int(self.cfg["train"]["seed"]), start_epoch=self.epoch,
                                           start_step=self.step)

    def watch(self, row: dict[str, Any], metrics: dict[str, float]) -> None:
        """Log the epoch to the monitor (loss terms, lrs, metrics, probe attention)."""
        if self.monitor is None:
            return
        self.monitor.log_epoch(self.step, self.last_terms, self.last_lrs, row)
        if metrics:
            self.monitor.log_metrics(self.step, metrics)
        self.monitor.log_probes(self.model, self.epoch, self.step)

    def run(self) -> dict[str, Any]:
        t = self.cfg["train"]
        deadline = time.perf_counter() + float(t["time_budget_s"]) if t["time_budget_s"] else None
        done = self.epoch >= t["epochs"] or (t["max_steps"] is not None and self.step >= t["max_steps"])
        if not done:
            self.start_monitor()
        finished = False
        try:
            self._loop(deadline, done)
            finished = True
        finally:
            if self.monitor is not None:
                self.monitor.close(draw=finished)
                self.monitor = None
        if self.info.is_main:
            atomic_write_text(self.run_dir / "metrics.json",
                              json.dumps({"final": self.last_metrics, "best": self.best}, indent=2))
        return {"metrics": self.last_metrics, "best_metrics": self.best.get("metrics", {}),
                "best_epoch": self.best.get("epoch"), "best_ckpt": str(self.run_dir / "best.pt"),
                "last_ckpt": str(self.run_dir / "last.pt"), "run_dir": str(self.run_dir),
                "history": self.history, "epochs": self.epoch, "steps": self.step, "rank": self.info.rank}

    def _loop(self, deadline: float | None, done: bool) -> None:
        t = self.cfg["train"]
        metric_key = t["checkpoint_metric"]
        while not done:
            row, stop = self.train_epoch(deadline)
            self.epoch += 1
            done = stop or self.epoch >= t["epochs"]
            reseed = None if done else self.maybe_reseed()
            if reseed is not None:
                row.update(reseeded_group=reseed.group, reseed_overlap=reseed.overlap)
            metrics: dict[str, float] = {}
            if self.info.is_main and (done or self.epoch % t["eval_every"] == 0):
                metrics = self.evaluate()
                self.last_metrics = metrics
                row.update(metrics)
                logger.info("epoch %d: loss %.4f, %s", self.epoch, row.get("loss", math.nan),
                            ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "group" not in k))
            else:
                logger.log(logging.INFO if self.info.is_main else logging.DEBUG, "epoch %d: loss %.4f",
                           self.epoch, row.get("loss", math.nan))
            self.history.append(row)
            if self.info.is_main:
                self.watch(row, metrics)
                value = metrics.get(metric_key)
                improved = value is not None and not math.isnan(value) and (
                    self.best["value"] is None or value > self.best["value"])
                if improved:
                    self.best = {"value": float(value), "epoch": self.epoch, "metrics": dict(metrics)}
                self.save_checkpoints(metrics or self.last_metrics, improved)
                self.save_state()
                write_csv(self.run_dir / "log.csv", self.history)
                if metrics or done:  # the plot is redrawn when there are new test points
                    plot_curves(self.run_dir / "curves.png", self.history)
            barrier(self.info)
            if self.on_epoch_end is not None:
                self.on_epoch_end(self.epoch, self.model, row)


def train(config: dict[str, Any], run_dir: str | Path, resume: bool = False, *,
          on_epoch_end: Callable[[int, nn.Module, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train a grouping model as described by ``config`` (see :mod:`dgml_viz.train.config`).

    Args:
        config: a (possibly partial) recipe dict; missing keys take the defaults.
        run_dir: output folder (created).
        resume: continue from ``run_dir/last_state.pt`` if present.
        on_epoch_end: optional ``f(epoch, model, log_row)`` called on every rank
            after each epoch's checkpoints are written.

    Returns:
        ``{"metrics", "best_metrics", "best_epoch", "best_ckpt", "last_ckpt",
        "run_dir", "history", "epochs", "steps", "rank"}`` (metrics are empty on ranks > 0).

    Under torchrun (``WORLD_SIZE > 1``) every rank calls this; rank 0 evaluates and writes.
    """
    config = config_from_dict(config)
    run_dir = Path(run_dir)
    state_path = run_dir / "last_state.pt"
    state = None
    if resume and state_path.exists():  # checked before anything on disk changes
        state = load_state(state_path, "cpu")
        check_resume_config(state.get("config"), config, state_path)
    elif resume:
        logger.warning("%s: no last_state.pt to resume from; starting from scratch", run_dir)
    info = init_distributed(config["train"]["device"])
    try:
        with contextlib.ExitStack() as stack:
            if info.is_main:  # one trainer per run dir: a second one refuses (one line) before writing
                from dgml_viz.utils.outdir import output_lock  # also sweeps a killed run's temp files

                stack.enter_context(output_lock(run_dir, timeout=0, option="run dir"))
            trainer = _Trainer(config, run_dir, info, on_epoch_end)
            trainer.setup()
            if state is not None:
                trainer.restore(state, state_path)
            if info.is_main:
                atomic_write_text(run_dir / "config.yaml", dump_config(config))
            barrier(info)
            return trainer.run()
    finally:
        cleanup(info)


#: keys a resumed run may change: how long and where it runs, not what it computes
RESUMABLE_KEYS = frozenset({"train.epochs", "train.max_steps", "train.time_budget_s", "train.device",
                            "train.num_workers", "train.progress", "train.tensorboard", "data.root",
                            "output.dir"})


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}{key}.") if isinstance(value, dict) and value else
                   {f"{prefix}{key}": value})
    return out


def check_resume_config(saved: Any, config: dict[str, Any], state_path: Path) -> None:
    """One-line ConfigError naming the keys where ``config`` differs from the run's own (except
    :data:`RESUMABLE_KEYS`), so a mismatched ``--resume`` is refused before it changes anything."""
    if not isinstance(saved, dict):
        raise CheckpointError(f"{state_path}: training state holds no config; cannot check the resume")
    old, new = _flatten(saved), _flatten(config)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_KEYS)
    if changed:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:4])
        more = f" (+{len(changed) - 4} more)" if len(changed) > 4 else ""
        raise ConfigError(f"{state_path}: cannot resume, the config differs from the run's: {shown}{more}; "
                          "resume with the run's own config.yaml or start a new --run-dir")


__all__ = ["train", "build_param_groups", "build_loss", "build_model", "build_datasets", "compute_embeddings",
           "evaluate_model", "collate_items", "load_state", "write_csv", "plot_curves"]
