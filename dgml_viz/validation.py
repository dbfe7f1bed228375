"""The one validation layer for values that come from files and users.

Checkpoint configs, transforms and state entries, training configs and devices
are checked here for type, range and size *before* any work or allocation, so
every command and the app fail with one line naming the file/key and the
problem (:class:`~dgml_viz.errors.ConfigError` / :class:`~dgml_viz.errors.CheckpointError`).

The bounds are generous (far above any published DML model) and exist so that a
corrupt or hostile file cannot ask for terabytes of memory:

==================  =====================================================
value               accepted
==================  =====================================================
``groups`` (K)      integer in [1, 256]
``dim``             integer in [K, 65536]
``reduction``       integer in [1, 65536]
parameters          at most :data:`MAX_PARAMETERS` (2e9), counted on the
                    meta device before anything is allocated
transform ``size``  integer in [8, 4096]; ``resize`` in [8, 8192]
mean / std          3 finite numbers each, std > 0
interpolation       bilinear (default), bicubic or nearest (PIL, antialiased)
channel_order       RGB (default) or BGR
==================  =====================================================

Example:
    >>> check_int(3, "groups", 1, 256)
    3
    >>> check_int(0, "model.reduction", 1, 65536)
    Traceback (most recent call last):
    ...
    dgml_viz.errors.ConfigError: model.reduction must be an integer in [1, 65536], got 0
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor

from dgml_viz.errors import CheckpointError, ConfigError

MAX_PARAMETERS = 2_000_000_000
GROUPS_RANGE = (1, 256)
DIM_MAX = 65536
REDUCTION_RANGE = (1, 65536)
SIZE_RANGE = (8, 4096)
RESIZE_RANGE = (8, 8192)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
ORDERS = ("RGB", "BGR")
#: plain values allowed inside ``backbone_kwargs``
_PLAIN = (bool, int, float, str, type(None))


def check_int(value: Any, key: str, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int in ``[lo, hi]`` (bools, floats and strings are refused)."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok and (lo is None or value >= lo) and (hi is None or value <= hi):
        return int(value)
    if lo is not None and hi is not None:
        want = f"an integer in [{lo}, {hi}]"
    elif lo is not None:
        want = "a positive integer" if lo == 1 else f"an integer >= {lo}"
    else:
        want = "an integer"
    raise ConfigError(f"{key} must be {want}, got {value!r}")


def check_number(value: Any, key: str, *, positive: bool = False, lo: float | None = None,
                 hi: float | None = None) -> float:
    """``value`` as a finite float; ``positive`` means > 0, ``lo``/``hi`` are inclusive bounds."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (not positive or value > 0) and (lo is None or value >= lo) and (hi is None or value <= hi):
        return float(value)
    if positive:
        want = "a number > 0"
    elif lo is not None and hi is not None:
        want = f"a number in [{lo:g}, {hi:g}]"
    elif lo is not None:
        want = "a non-negative number" if lo == 0 else f"a number >= {lo:g}"
    else:
        want = "a finite number"
    raise ConfigError(f"{key} must be {want}, got {value!r}")


def check_bool(value: Any, key: str) -> bool:
    """``value`` if it is a bool (``0``/``"yes"`` are refused: YAML gives real bools)."""
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{key} must be true or false, got {value!r}")


def check_str(value: Any, key: str) -> str:
    """A non-empty string without NUL bytes."""
    if isinstance(value, str) and value and "\x00" not in value:
        return value
    raise ConfigError(f"{key} must be a non-empty string, got {value!r}")


def check_model_fields(backbone: Any, head: Any, groups: Any, dim: Any, reduction: Any, freeze_bn: Any,
                       backbone_kwargs: Any) -> None:
    """Types and ranges of the :class:`~dgml_viz.model.config.ModelConfig` fields (names as keys)."""
    check_str(backbone, "backbone")
    check_str(head, "head")
    k = check_int(groups, "groups", *GROUPS_RANGE)
    check_int(dim, "dim", k, DIM_MAX)
    check_int(reduction, "reduction", *REDUCTION_RANGE)
    check_bool(freeze_bn, "freeze_bn")
    if not isinstance(backbone_kwargs, dict):
        raise ConfigError(f"backbone_kwargs must be a mapping, got {backbone_kwargs!r}")
    for name, value in backbone_kwargs.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        if not isinstance(name, str) or not all(isinstance(v, _PLAIN) for v in items):
            raise ConfigError(f"backbone_kwargs.{name} must be a plain value, got {type(value).__name__}")


def meta_model(config: Any) -> torch.nn.Module | None:
    """The model ``config`` describes, built on the meta device (shapes only, nothing allocated).

    Raises ConfigError when the backbone/head cannot be built with these values
    (e.g. a negative width) or it would have more than :data:`MAX_PARAMETERS`
    parameters. Returns None for a backbone with an op that has no meta kernel
    (the real build checks it then).
    """
    from dgml_viz.model.network import GroupingNet

    try:
        with torch.device("meta"):
            model = GroupingNet(config, pretrained=False)
    except ConfigError:
        raise
    except NotImplementedError:
        return None
    except (RuntimeError, ValueError, TypeError, AssertionError, ArithmeticError) as exc:  # e.g. 1/sqrt(0 channels)
        raise ConfigError(f"cannot build {config.backbone} + {config.head} with these values "
                          f"({_first_line(exc)})") from None
    total = sum(t.numel() for t in model.state_dict().values())
    if total > MAX_PARAMETERS:
        raise ConfigError(f"model would have {total:.3g} parameters (limit {MAX_PARAMETERS:.0e}); "
                          "check dim / groups / backbone_kwargs")
    return model


def check_transform(transform: Any, key: str = "transform") -> dict[str, Any]:
    """A checkpoint/recipe eval transform, normalised to ``{size, resize, mean, std, mode}``.

    ``resize`` defaults to ``size`` and ``mean``/``std`` to ImageNet's when absent.
    """
    from dgml_viz.data.transforms import MODES

    if not isinstance(transform, Mapping):
        raise ConfigError(f"{key} must be a mapping, got {type(transform).__name__}")
    size = check_int(transform.get("size"), f"{key}.size", *SIZE_RANGE)
    resize = transform.get("resize")
    resize = size if resize is None else check_int(resize, f"{key}.resize", *RESIZE_RANGE)
    stats = {}
    for name, default in (("mean", (0.485, 0.456, 0.406)), ("std", (0.229, 0.224, 0.225))):
        value = transform.get(name, default)
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise ConfigError(f"{key}.{name} must be a list of 3 numbers, got {value!r}")
        stats[name] = [check_number(v, f"{key}.{name}", positive=name == "std") for v in value]
    mode = transform.get("mode") or "center_crop"
    if mode not in MODES:
        raise ConfigError(f"{key}.mode must be one of {', '.join(MODES)}, got {mode!r}")
    out = {"size": size, "resize": resize, "mean": stats["mean"], "std": stats["std"], "mode": mode}
    for name, default, allowed in (("interpolation", "bilinear", INTERPOLATIONS), ("channel_order", "RGB", ORDERS)):
        value = transform.get(name) or default
        if value not in allowed:
            raise ConfigError(f"{key}.{name} must be one of {', '.join(allowed)}, got {value!r}")
        if value != default:  # recorded only when it differs, so existing transforms stay as they were
            out[name] = value
    return out


def check_state_dict(state: Any, source: str) -> dict[str, Tensor]:
    """A state dict: string keys, tensor values (a one-line CheckpointError naming the first bad entry)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: state_dict must be a mapping, got {type(state).__name__}")
    for name, value in state.items():
        if not isinstance(name, str):
            raise CheckpointError(f"{source}: state_dict key {name!r} is not a string")
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{source}: state_dict[{name!r}] is a {type(value).__name__}, not a tensor")
    return state


def check_device(spec: Any, key: str = "device") -> torch.device:
    """Resolve a device spec (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) and check it exists *now*.

    ``auto`` (or None) is CUDA when available, else the CPU — the one default of every command.
    """
    if spec is None or spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(spec, (str, torch.device)):
        raise ConfigError(f"{key} must be auto, cpu, cuda or cuda:N, got {spec!r}")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{key}: unknown device {spec!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{key}={spec}: no CUDA device is available on this machine (use cpu or auto)")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{key}={spec}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"{key}={spec}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise ConfigError(f"{key}: unsupported device {spec!r} (use auto, cpu, cuda or cuda:N)")
    return device


def check_path_text(value: Any, key: str) -> str:
    """A user-typed path: a non-empty string without NUL or other control characters."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: enter a path")
    bad = next((c for c in value if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise ConfigError(f"{key}: the path contains a control character ({bad!r}); remove it")
    if len(value) > 4096:
        raise ConfigError(f"{key}: the path is longer than 4096 characters")
    return value


def parse_groups(text: str | None, k: int) -> list[int]:
    """``"0,2"`` -> ``[0, 2]`` checked against ``K`` (all groups when ``None``)."""
    if text is None:
        return list(range(k))
    try:
        groups = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--groups must be comma-separated integers, got {text!r}") from None
    bad = [g for g in groups if not 0 <= g < k]
    if bad or not groups:
        raise ConfigError(f"--groups {text}: the model has groups 0..{k - 1}")
    return sorted(set(groups))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


__all__ = ["MAX_PARAMETERS", "check_int", "check_number", "check_bool", "check_str", "check_model_fields",
           "meta_model", "check_transform", "check_state_dict", "check_device", "check_path_text", "parse_groups"]
