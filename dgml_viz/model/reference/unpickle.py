"""Read a reference-implementation ``.pth.tar`` without running any pickled code.

The reference (XinyiXuXD/DGML-master, ``evaluation.set_checkpoint``) saves
``{"state_dict", "opt", "progress", "aux"}`` with plain ``torch.save``: ``opt`` is
a yacs ``CfgNode`` (a ``dict`` subclass) or an ``argparse.Namespace``,
``progress`` a dict of its own ``Progress_Saver`` objects whose lists hold numpy
scalars. None of those classes is importable here, and none of their code may
run. We load with ``torch.load(weights_only=True)`` - torch's restricted
unpickler, which reads both the zip and the legacy (pre-1.6) format and maps
``cuda:0`` storages onto the CPU - after allow-listing, under the exact names
the pickle uses, inert stand-ins that we wrote:

* a reference *record* class (``CfgNode``, ``Progress_Saver``,
  ``argparse.Namespace``) becomes a plain ``OrderedDict`` tagged with the class
  name. The restricted unpickler fills dict items (``SETITEMS``) only into exact
  ``dict``/``OrderedDict`` objects and sets attributes (``BUILD``) on an
  ``OrderedDict``'s ``__dict__``, so both kinds of record load as data. After
  loading, tagged dicts are turned into :class:`PickledRecord`.
* numpy scalars / arrays / dtypes are rebuilt by our own functions from their
  raw bytes (object dtypes are refused).

Every other global is refused before torch even starts, with the name of the
global in the one-line error. A stand-in class that a pickle tries to *call*
with arguments (``REDUCE``) refuses too.
"""
from __future__ import annotations

import io
import pickle
import pickletools
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from dgml_viz.errors import CheckpointError

#: class names (last dotted component) of the reference's own pickled records,
#: accepted from any module (the module is never imported).
RECORD_CLASSES: frozenset[str] = frozenset({"CfgNode", "Progress_Saver"})
#: fully qualified records accepted by their exact name.
RECORD_GLOBALS: frozenset[str] = frozenset({"argparse.Namespace"})

_TAG = "__dgml_viz_pickled_class__"
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@dataclass
class PickledRecord:
    """Inert copy of a pickled object of foreign code: its class name and data.

    ``items`` holds what the object stored as a dict (``CfgNode`` keys),
    ``attrs`` its instance attributes (``Namespace`` fields,
    ``Progress_Saver.groups``; dunder bookkeeping like ``__immutable__`` included).
    """

    cls: str
    items: dict[Any, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        """Public data of the record: dict items and non-dunder attributes."""
        out = {k: v for k, v in self.attrs.items() if not (isinstance(k, str) and k.startswith("__"))}
        out.update(self.items)
        return out

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields().get(name, default)


# --------------------------------------------------------------------------- stand-ins
class _RecordStandIn:
    """Allow-listed under a foreign class name; ``NEWOBJ`` makes a tagged ``OrderedDict``."""

    qualified = "?"

    def __new__(cls, *args: Any) -> Any:  # type: ignore[misc]
        if args:
            raise pickle.UnpicklingError(f"refused to call {cls.qualified} with arguments")
        od: OrderedDict[Any, Any] = OrderedDict()
        od.__dict__[_TAG] = cls.qualified
        return od


def _record_stand_in(full_name: str) -> type:
    return type(f"StandIn[{full_name}]", (_RecordStandIn,), {"qualified": full_name})


class _DType:
    """Stand-in for ``numpy.dtype(spec, align, copy)`` plus its ``BUILD`` state."""

    def __init__(self, spec: Any = None, align: Any = False, copy: Any = True) -> None:
        if not isinstance(spec, str):
            raise pickle.UnpicklingError(f"refused numpy dtype spec {type(spec).__name__}")
        self.spec = spec
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) >= 2 and isinstance(state[1], str):
            self.byteorder = state[1]
        if isinstance(state, tuple) and len(state) >= 4 and state[3] is not None:
            raise pickle.UnpicklingError("refused structured numpy dtype")

    def resolve(self) -> np.dtype:
        dt = np.dtype(self.spec)
        if dt.hasobject:
            raise pickle.UnpicklingError("refused numpy object array/scalar")
        return dt.newbyteorder(self.byteorder) if self.byteorder in "<>" else dt


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    """Stand-in for ``numpy.core.multiarray.scalar(dtype, raw_bytes)``."""
    if not isinstance(dtype, _DType) or not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("refused numpy scalar that is not plain raw bytes")
    return np.frombuffer(bytes(data), dtype=dtype.resolve(), count=1)[0]


class _Array:
    """Stand-in for ``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`` + ``BUILD``."""

    def __init__(self, *args: Any) -> None:
        self.value: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("refused numpy array state")
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DType) or not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError("refused numpy array that is not plain raw bytes")
        arr = np.frombuffer(bytes(raw), dtype=dtype.resolve())
        self.value = arr.reshape(tuple(shape), order="F" if fortran else "C").copy()


class _NdarrayMarker:
    """Stand-in for the ``numpy.ndarray`` class passed to ``_reconstruct`` (never built)."""


_NUMPY: dict[str, Callable[..., Any] | type] = {
    "numpy.dtype": _DType,
    "numpy.ndarray": _NdarrayMarker,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _NUMPY[f"{_mod}.scalar"] = _np_scalar
    _NUMPY[f"{_mod}._reconstruct"] = _Array


def _torch_allowed() -> set[str]:
    from torch import _weights_only_unpickler as wo

    return set(wo._get_allowed_globals()) | set(wo._get_user_allowed_globals())


def _is_record(full_name: str) -> bool:
    return full_name in RECORD_GLOBALS or full_name.rsplit(".", 1)[-1] in RECORD_CLASSES


# --------------------------------------------------------------------------- scanning
def _pickle_globals(stream: io.BufferedIOBase | io.BytesIO) -> Iterator[str]:
    """Names of every global one pickle in ``stream`` refers to (static, nothing runs)."""
    import _compat_pickle

    strings: list[str] = []
    for op, arg, _ in pickletools.genops(stream):
        if op.name == "GLOBAL":
            module, name = str(arg).split(" ", 1)
        elif op.name == "STACK_GLOBAL":
            if len(strings) < 2:
                raise CheckpointError("malformed pickle (STACK_GLOBAL without names)")
            module, name = strings[-2], strings[-1]
        else:
            if isinstance(arg, str) and "UNICODE" in op.name or op.name.endswith("STRING"):
                strings.append(str(arg))
            continue
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        yield f"{module}.{name}"


def _globals_in_file(path: Path) -> set[str]:
    """Globals of the main pickle of a zip or legacy torch file."""
    found: set[str] = set()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("data.pkl")]
            if not names:
                raise CheckpointError(f"{path}: zip archive without data.pkl (not a torch.save file)")
            found.update(_pickle_globals(io.BytesIO(zf.read(names[0]))))
        return found
    with open(path, "rb") as fh:
        try:
            first = list(pickletools.genops(fh))
        except (ValueError, EOFError) as exc:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle: "
                                  f"{_reason(exc)})") from None
        magic = next((arg for op, arg, _ in first if op.name.startswith(("LONG", "BININT", "INT"))), None)
        if magic != _LEGACY_MAGIC:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor torch's legacy format)")
        for _ in range(2):  # protocol version, sys info
            found.update(_pickle_globals(fh))
        found.update(_pickle_globals(fh))  # the saved object
    return found


# --------------------------------------------------------------------------- loading
def _reason(exc: BaseException) -> str:
    """The informative part of torch's weights-only error (not its generic preamble)."""
    text = str(exc).strip()
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line[:200]


def _detag(obj: Any, seen: dict[int, Any] | None = None) -> Any:
    """Replace tagged dicts by :class:`PickledRecord` and numpy stand-ins by arrays."""
    seen = {} if seen is None else seen
    if id(obj) in seen:
        return seen[id(obj)]
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, _Array):
        return obj.value
    if isinstance(obj, dict):
        tag = obj.__dict__.get(_TAG) if isinstance(obj, OrderedDict) else None
        if tag is not None:
            rec = PickledRecord(cls=str(tag))
            seen[id(obj)] = rec
            rec.items = {k: _detag(v, seen) for k, v in obj.items()}
            rec.attrs = {k: _detag(v, seen) for k, v in obj.__dict__.items() if k != _TAG}
            return rec
        out = type(obj)() if type(obj) in (dict, OrderedDict) else {}
        seen[id(obj)] = out
        for k, v in obj.items():
            out[k] = _detag(v, seen)
        return out
    if isinstance(obj, list):
        lst: list[Any] = []
        seen[id(obj)] = lst
        lst.extend(_detag(v, seen) for v in obj)
        return lst
    if isinstance(obj, tuple):
        return tuple(_detag(v, seen) for v in obj)
    return obj


def load_reference_object(path: str | Path) -> Any:
    """Everything the reference saved in ``path``, as tensors, plain values and :class:`PickledRecord`.

    Raises a one-line :class:`CheckpointError` naming the refused global (or
    the real unpickling problem); no pickled code ever runs.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: checkpoint is truncated or corrupt (broken zip archive)")
    try:
        names = _globals_in_file(path)
    except CheckpointError:
        raise
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError, KeyError) as exc:
        raise CheckpointError(f"{path}: checkpoint is truncated or corrupt ({_reason(exc)})") from None
    allowed = _torch_allowed()
    stand_ins: list[tuple[Any, str]] = []
    for name in sorted(names):
        if name in allowed:
            continue
        if name in _NUMPY:
            stand_ins.append((_NUMPY[name], name))
        elif _is_record(name):
            stand_ins.append((_record_stand_in(name), name))
        else:
            raise CheckpointError(
                f"{path}: refused pickled global {name!r}: not a tensor type, plain value, numpy scalar "
                "or a record the reference implementation saves (CfgNode, argparse.Namespace, "
                "Progress_Saver); nothing in the file was run"
            )
    try:
        with torch.serialization.safe_globals(stand_ins):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused to unpickle: {_reason(exc)}; nothing in the file was run") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, TypeError,
            AttributeError, IndexError) as exc:
        raise CheckpointError(f"{path}: checkpoint is truncated or corrupt ({_reason(exc)})") from None
    return _detag(obj)


__all__ = ["PickledRecord", "load_reference_object", "RECORD_CLASSES", "RECORD_GLOBALS"]
