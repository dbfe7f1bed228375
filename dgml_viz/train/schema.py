"""The training recipe schema: one frozen dataclass per section, each field with its type, default and meaning.

Defaults are the CUB-200-2011 reference recipe (DESIGN.md). Each field also carries the check of its
values (``metadata["check"]``, a ``f(value, key)`` raising a one-line
:class:`~dgml_viz.errors.ConfigError` that names the dotted key), run when a section is built, so a
:class:`Recipe` always holds valid values. Adding a key is one line in its section::

    lambda_new: float = setting(0.0, "weight of the new term (0 = off)", NON_NEGATIVE)

YAML is parsed at the edge (:mod:`dgml_viz.train.config`); callers keep using the plain nested dict
(``asdict(recipe)``), which is what ``config.yaml`` in every run dir holds. A dict-valued field
(``data.kwargs``, ``model.backbone_kwargs``) is free-form; a dataclass-valued one (``train.weight_decay``)
is a checked sub-section.

Example:
    >>> r = Recipe()
    >>> r.train.lr, r.train.weight_decay.query, r.model.groups
    (1e-05, 0.001, 3)
    >>> TrainConfig(epochs=0)
    Traceback (most recent call last):
    ...
    dgml_viz.errors.ConfigError: train.epochs must be a positive integer, got 0
"""
from __future__ import annotations

import copy
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from functools import partial
from typing import Any, Callable, ClassVar

from dgml_viz.data.transforms import IMAGENET_MEAN, IMAGENET_STD, MODES
from dgml_viz.errors import ConfigError
from dgml_viz.model.config import ModelConfig
from dgml_viz.validation import check_bool, check_int, check_number, check_str, check_transform

#: ``check(value, dotted_key)``: raises a one-line ConfigError naming the key when ``value`` is bad
Check = Callable[[Any, str], Any]


def setting(default: Any, doc: str, check: Check | None = None) -> Any:
    """A schema field: ``default`` (lists/dicts copied per instance), a one-line ``doc``, a ``check``."""
    meta = {"doc": doc, "check": check}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, doc: str) -> Any:
    """A field holding a nested section (a dataclass, built from its defaults)."""
    return field(default_factory=cls, metadata={"doc": doc, "check": None})


# ----------------------------------------------------------------------------- value checks
#: an integer >= 1
POSITIVE_INT: Check = partial(check_int, lo=1)
#: an integer >= 0
COUNT: Check = partial(check_int, lo=0)
#: a number > 0 (a zero or negative rate trains nothing or diverges)
RATE: Check = partial(check_number, positive=True)
#: a number >= 0
NON_NEGATIVE: Check = partial(check_number, lo=0)
BOOL: Check = check_bool
TEXT: Check = check_str


def optional(check: Check) -> Check:
    """``check`` unless the value is null (the key is then named ``"<key> (or null)"``)."""
    def run(value: Any, key: str) -> None:
        if value is not None:
            check(value, f"{key} (or null)")
    return run


def one_of(*allowed: str) -> Check:
    """One of ``allowed``."""
    def run(value: Any, key: str) -> None:
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}; choose one of {', '.join(allowed)}")
    return run


def _epochs(value: Any, key: str) -> None:
    if not isinstance(value, list):
        raise ConfigError(f"{key} must be a list of epochs")
    for step in value:
        check_int(step, f"{key}[]", 1)


def _ks(value: Any, key: str) -> None:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key} must be a non-empty list of positive integers")
    for k in value:
        check_int(k, f"{key}[]", 1)


def _scale_range(value: Any, key: str) -> None:
    if not (isinstance(value, list) and len(value) == 2):
        raise ConfigError(f"{key} must be [min, max], got {value!r}")
    lo = check_number(value[0], f"{key}[0]", positive=True, hi=1)
    check_number(value[1], f"{key}[1]", lo=lo, hi=1)


def _device(value: Any, key: str) -> None:
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be auto, cpu, cuda or cuda:N, got {value!r}")


#: a list of epochs >= 1
EPOCHS: Check = _epochs
#: a non-empty list of integers >= 1
KS: Check = _ks
#: ``[min, max]`` with 0 < min <= max <= 1
SCALE_RANGE: Check = _scale_range
#: a device name (whether it exists is checked when training starts: the config may be read elsewhere)
DEVICE: Check = _device


def _check_fields(obj: Any, prefix: str) -> None:
    for f in fields(obj):
        check = f.metadata.get("check")
        if check is not None:
            check(getattr(obj, f.name), f"{prefix}.{f.name}")


class _Section:
    """Runs every field's check on construction; ``KEY`` is the section's dotted name."""

    KEY: ClassVar[str] = ""

    def __post_init__(self) -> None:
        _check_fields(self, self.KEY)


# ----------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class RecipeModelConfig(ModelConfig):
    """``model``: the :class:`~dgml_viz.model.config.ModelConfig` fields plus what only training needs."""

    KEY: ClassVar[str] = "model"

    freeze_bn: bool = setting(True, "keep the backbone's BatchNorm layers in eval mode (reference recipes)")
    pretrained: bool = setting(True, "start the backbone from its pretrained (ImageNet) weights", BOOL)

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except ConfigError as exc:
            raise ConfigError(f"model.{exc}") from None
        _check_fields(self, self.KEY)

    def model_config(self) -> ModelConfig:
        """The architecture alone (what a checkpoint stores)."""
        return ModelConfig(**{f.name: getattr(self, f.name) for f in fields(ModelConfig)})


@dataclass(frozen=True)
class DataConfig(_Section):
    """``data``: the dataset, its splits and the train/eval transforms.

    ``size``, ``resize``, ``mean``, ``std`` and ``mode`` are the eval transform saved in checkpoints,
    checked together by :func:`dgml_viz.validation.check_transform`.
    """

    KEY: ClassVar[str] = "data"

    name: str = setting("cub200", "dataset name (cub200, cars196, sop, inshop, synthetic, folder, ...)", TEXT)
    root: str | None = setting(None, "dataset folder (null = the dataset's default / none needed)", optional(TEXT))
    train_split: str = setting("train", "split the model is trained on")
    test_split: str = setting("test", "split evaluated (In-Shop: the query split)")
    gallery_split: str | None = setting(None, "gallery split searched by the test split's queries (In-Shop: gallery)")
    size: int = setting(224, "input size in pixels (train crop and eval crop)")
    resize: int | None = setting(256, "eval: shorter side resized to this before the center crop (null = size)")
    mode: str = setting("center_crop", "eval geometry: center_crop (resize + crop) or full (whole image to size)",
                        one_of(*MODES))
    mean: list[float] = setting(list(IMAGENET_MEAN), "per-channel normalisation mean (RGB)")
    std: list[float] = setting(list(IMAGENET_STD), "per-channel normalisation std (RGB, > 0)")
    crop_scale: list[float] = setting([0.08, 1.0], "train RandomResizedCrop area range [min, max] in (0, 1]",
                                      SCALE_RANGE)
    flip: bool = setting(True, "train: random horizontal flips", BOOL)
    kwargs: dict[str, Any] = setting({}, "extra dataset arguments (free-form, e.g. synthetic image_size)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_transform({k: getattr(self, k) for k in ("size", "resize", "mean", "std", "mode")}, self.KEY)


@dataclass(frozen=True)
class WeightDecay(_Section):
    """``train.weight_decay``: one weight decay per parameter group (DESIGN.md's three groups)."""

    KEY: ClassVar[str] = "train.weight_decay"

    backbone: float = setting(0.003, "weight decay of the backbone", NON_NEGATIVE)
    keyval: float = setting(0.003, "weight decay of the head's key/value convs (all head parameters "
                                   "but the queries)", NON_NEGATIVE)
    query: float = setting(0.001, "weight decay of the learnable queries", NON_NEGATIVE)


@dataclass(frozen=True)
class TrainConfig(_Section):
    """``train``: optimisation, the losses and their schedules, and how the run executes."""

    KEY: ClassVar[str] = "train"

    epochs: int = setting(100, "training epochs", POSITIVE_INT)
    batch_classes: int = setting(56, "classes per batch (n)", POSITIVE_INT)
    batch_per_class: int = setting(2, "images per class in a batch (m); batch size = n * m", POSITIVE_INT)
    lr: float = setting(1e-5, "learning rate of the head (and of backbone/queries unless set below)", RATE)
    lr_backbone: float | None = setting(None, "learning rate of the backbone (null = lr)", optional(RATE))
    weight_decay: WeightDecay = section(WeightDecay, "weight decay of each parameter group {backbone, keyval, query}")
    lr_steps: list[int] = setting([55], "epochs at which the learning rates are multiplied by gamma", EPOCHS)
    gamma: float = setting(0.3, "MultiStepLR factor", RATE)
    beta_lr: float = setting(5e-5, "learning rate of the margin loss's learnable betas", RATE)
    loss: str = setting("margin", "metric loss: margin or multi_similarity", one_of("margin", "multi_similarity"))
    margin: float = setting(0.2, "margin loss: margin", NON_NEGATIVE)
    beta_init: float = setting(1.2, "margin loss: initial beta (one per class and group)", NON_NEGATIVE)
    cutoff: float = setting(0.5, "distance-weighted sampling: lower distance cutoff", NON_NEGATIVE)
    nonzero_loss_cutoff: float = setting(1.4, "distance-weighted sampling: negatives farther than this are skipped",
                                         NON_NEGATIVE)
    ms_alpha: float = setting(2.0, "multi-similarity loss: positive scale alpha", NON_NEGATIVE)
    ms_beta: float = setting(50.0, "multi-similarity loss: negative scale beta", NON_NEGATIVE)
    ms_base: float = setting(0.5, "multi-similarity loss: similarity base lambda", NON_NEGATIVE)
    ms_epsilon: float = setting(0.1, "multi-similarity loss: pair-mining margin epsilon", NON_NEGATIVE)
    lambda_div: float = setting(0.02, "diversity loss weight (groups of the same image kept apart)", NON_NEGATIVE)
    lambda_div_early: float | None = setting(None, "diversity weight before attention_start_epoch, ramping to "
                                                   "lambda_div with the attention terms (null = lambda_div "
                                                   "throughout)", optional(RATE))
    div_alpha: float = setting(2.0, "diversity loss: binomial deviance alpha", NON_NEGATIVE)
    div_beta: float = setting(0.5, "diversity loss: cosine similarity threshold beta_2", NON_NEGATIVE)
    div_c: float = setting(25.0, "diversity loss: scale C", NON_NEGATIVE)
    lambda_ent: float = setting(0.0, "attention-entropy weight (0 = off)", NON_NEGATIVE)
    attention_warmup_epochs: int = setting(0, "epochs of linear ramp of the attention terms after their start",
                                           COUNT)
    attention_start_epoch: int = setting(0, "0-based epoch before which the attention terms are off", COUNT)
    lambda_overlap: float = setting(0.0, "attention-overlap weight (0 = off)", NON_NEGATIVE)
    overlap_radius: int = setting(0, "box blur radius of the maps in the overlap term, in feature cells", COUNT)
    lr_query: float | None = setting(None, "learning rate of the queries (null = lr)", optional(RATE))
    layer_decay: float | None = setting(None, "layer-wise lr decay for backbones that declare layer_ids (timm ViTs): "
                                              "depth i gets lr_backbone * layer_decay ** (depths - 1 - i); "
                                              "null = off", optional(RATE))
    metric_on: str = setting("groups", "groups = one metric loss per group (DESIGN.md); concat = one on the "
                                       "retrieval embedding", one_of("groups", "concat"))
    lambda_spread: float = setting(0.0, "attention spatial-variance weight (0 = off)", NON_NEGATIVE)
    lambda_consistency: float = setting(0.0, "flip-consistency weight from attention_start_epoch on (ramping with "
                                             "the attention terms): each group's centre of mass on a flipped copy "
                                             "of an image, mirrored back, matches the image's (0 = off; costs a "
                                             "forward of consistency_images more images per step)", NON_NEGATIVE)
    lambda_consistency_early: float | None = setting(None, "flip-consistency weight before attention_start_epoch, "
                                                           "ramping to lambda_consistency with the attention terms "
                                                           "(null = 0: off until they start)", optional(NON_NEGATIVE))
    consistency_view: str = setting("rot180", "the flip of the consistency term: rot180 (both axes), hflip, vflip",
                                    one_of("rot180", "hflip", "vflip"))
    consistency_images: int = setting(16, "images of each batch the consistency term flips", POSITIVE_INT)
    attention_temperature_early: float = setting(1.0, "softmax temperature of the attention logits before "
                                                      "attention_start_epoch, ramping to 1 with the attention "
                                                      "terms (1 = off; > 1 keeps the maps soft while the plain "
                                                      "phase learns the parts; heads with a temperature only)", RATE)
    reseed_overlap: float | None = setting(None, "re-seed a duplicated group: after each epoch of reseed_epochs, "
                                                 "when two groups' maps, box-blurred by overlap_radius, share more "
                                                 "than this mass on a fixed probe of training images, the less peaked "
                                                 "group gets a fresh query and a soft temperature "
                                                 "(attention_temperature_early) ramping back to 1 over "
                                                 "reseed_warmup_epochs (null = off; heads that can reset a group "
                                                 "only)", optional(partial(check_number, lo=0, hi=1)))
    reseed_epochs: list[int] = setting([], "1-based epochs after which the duplicate check of reseed_overlap runs "
                                           "(one re-seed per run)", EPOCHS)
    reseed_warmup_epochs: int = setting(2, "epochs over which a re-seeded group's temperature returns to 1", COUNT)
    reseed_probe_images: int = setting(64, "training images (evenly spaced, fixed) the duplicate check reads",
                                       POSITIVE_INT)
    eval_every: int = setting(1, "evaluate (and checkpoint) every this many epochs, and after the last",
                              POSITIVE_INT)
    seed: int = setting(0, "seed of weights, sampling and augmentation", COUNT)
    num_workers: int = setting(4, "DataLoader worker processes (0 = in-process)", COUNT)
    amp: bool = setting(True, "mixed precision (CUDA only)", BOOL)
    channels_last: bool = setting(True, "channels-last memory format (CUDA only)", BOOL)
    compile: bool = setting(False, "torch.compile the model", BOOL)
    deterministic: bool = setting(False, "deterministic kernels (slower)", BOOL)
    max_steps: int | None = setting(None, "stop after this many optimizer steps (null = no limit)",
                                    optional(POSITIVE_INT))
    steps_per_epoch: int | None = setting(None, "batches per epoch (null = one pass over the train split)",
                                          optional(POSITIVE_INT))
    time_budget_s: float | None = setting(None, "stop after this many seconds of training (null = no limit)",
                                          optional(RATE))
    device: str = setting("auto", "auto, cpu, cuda or cuda:N (checked when training starts)", DEVICE)
    progress: bool = setting(True, "show progress bars", BOOL)
    checkpoint_metric: str = setting("recall@1", "metric that picks best.pt (higher is better)", TEXT)
    tensorboard: bool = setting(True, "TensorBoard logs in run_dir/tb, with the probe attention timeline", BOOL)


@dataclass(frozen=True)
class EvalConfig(_Section):
    """``eval``: retrieval evaluation of the test split."""

    KEY: ClassVar[str] = "eval"

    ks: list[int] = setting([1, 2, 4, 8], "k of each reported Recall@k", KS)
    nmi: bool = setting(True, "also compute NMI (k-means on the embeddings)", BOOL)
    batch_size: int = setting(128, "images per forward pass when embedding", POSITIVE_INT)
    chunk: int = setting(2048, "queries per block of the similarity matrix (bounds memory)", POSITIVE_INT)


@dataclass(frozen=True)
class OutputConfig(_Section):
    """``output``: where runs are written."""

    KEY: ClassVar[str] = "output"

    dir: str = setting("runs", "parent folder of run dirs", TEXT)


@dataclass(frozen=True)
class Recipe:
    """A whole training recipe (typed view); ``asdict(recipe)`` is the plain config dict callers use."""

    model: RecipeModelConfig = section(RecipeModelConfig, "architecture of the model trained")
    data: DataConfig = section(DataConfig, "dataset, splits and transforms")
    train: TrainConfig = section(TrainConfig, "optimisation, losses and execution")
    eval: EvalConfig = section(EvalConfig, "retrieval evaluation")
    output: OutputConfig = section(OutputConfig, "where runs are written")


# ----------------------------------------------------------------------------- dict <-> dataclasses
def _section_type(f: Any) -> type | None:
    factory = f.default_factory
    return factory if factory is not MISSING and isinstance(factory, type) and is_dataclass(factory) else None


def build(cls: type, data: Any, key: str = "") -> Any:
    """``cls`` built from a plain (fully resolved) dict; every field is checked.

    A wrong shape (not a mapping, a key missing or unknown) is a one-line ConfigError naming it.
    """
    names = [f.name for f in fields(cls)]
    where = f"{key}." if key else ""
    if not isinstance(data, dict):
        raise ConfigError(f"{key or 'config'} must be a mapping, got {type(data).__name__}")
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"unknown config key {where + str(unknown[0])!r}")
    missing = [n for n in names if n not in data]
    if missing:
        raise ConfigError(f"missing config key {where + missing[0]!r}")
    values = {}
    for f in fields(cls):
        sub = _section_type(f)
        values[f.name] = build(sub, data[f.name], where + f.name) if sub is not None else data[f.name]
    return cls(**values)


def defaults() -> dict[str, Any]:
    """The default recipe as the plain nested dict (a fresh copy)."""
    return asdict(Recipe())


def free_form_keys(cls: type = Recipe, key: str = "") -> set[str]:
    """Dotted names of the free-form (dict-valued) fields: their contents are not checked against the schema."""
    out: set[str] = set()
    for f in fields(cls):
        sub, dotted = _section_type(f), f"{key}{f.name}"
        if sub is not None:
            out |= free_form_keys(sub, dotted + ".")
        elif isinstance(_default(f), dict):
            out.add(dotted)
    return out


def _default(f: Any) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def describe(cls: type = Recipe, key: str = "") -> list[str]:
    """One line per key: ``train.lr: float = 1e-05  # meaning`` (the schema as text)."""
    lines: list[str] = []
    for f in fields(cls):
        sub, dotted = _section_type(f), f"{key}{f.name}"
        if sub is not None:
            lines += describe(sub, dotted + ".")
        else:
            doc = f.metadata.get("doc", "")
            lines.append(f"{dotted}: {f.type} = {_default(f)!r}" + (f"  # {doc}" if doc else ""))
    return lines


__all__ = ["Recipe", "RecipeModelConfig", "DataConfig", "TrainConfig", "WeightDecay", "EvalConfig", "OutputConfig",
           "setting", "section", "build", "defaults", "free_form_keys", "describe"]
