"""`save(obj, path)` / `load(path)`: nested dicts (and lists/tuples) of arrays, tensors and
Python scalars in one `.npz` file, without pickle, written atomically.

Every leaf array is stored under its path in the tree ("model/conv.weight"); a JSON
manifest stored beside them records the tree's structure and the Python types of scalars.

Files do not depend on devices: `save` copies GPU arrays to the host, and `load` puts the
tensors and arrays on the device it is given (`map_location`, as `torch.load`; the CPU by
default), so a run trained on a GPU can be loaded on a CPU and the other way round.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from autograd.backend import CPU, Device, is_cupy_array, to_device
from autograd.backend import device as parse_device
from autograd.files import atomic_write
from autograd.tensor import Tensor

_MANIFEST = "__manifest__"


def _flatten(obj: Any, path: str, arrays: dict[str, np.ndarray]) -> Any:
    """The manifest entry for `obj`; its arrays go into `arrays` under their paths."""
    if isinstance(obj, Tensor):
        arrays[path] = to_device(obj.data, CPU)
        return {"tensor": path}
    if isinstance(obj, np.ndarray) or is_cupy_array(obj):
        arrays[path] = to_device(obj, CPU)
        return {"array": path}
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        if isinstance(obj, float) and not np.isfinite(obj):
            return {"float": repr(obj)}
        return {"value": obj}
    if isinstance(obj, dict):
        items = []
        for key, value in obj.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"save: dict keys must be str or int, got {key!r} at {path!r}")
            items.append([key, _flatten(value, f"{path}/{key}", arrays)])
        return {"dict": items}
    if isinstance(obj, (list, tuple)):
        kind = "list" if isinstance(obj, list) else "tuple"
        return {kind: [_flatten(v, f"{path}/{i}", arrays) for i, v in enumerate(obj)]}
    raise TypeError(f"save: cannot store a {type(obj).__name__} (at {path!r})")


def _unflatten(entry: dict, arrays, target: Device) -> Any:
    (kind, value), = entry.items()
    if kind == "tensor":
        return Tensor(to_device(arrays[value], target))
    if kind == "array":
        return to_device(arrays[value], target)
    if kind == "value":
        return value
    if kind == "float":
        return float(value)
    if kind == "dict":
        return {key: _unflatten(item, arrays, target) for key, item in value}
    if kind == "list":
        return [_unflatten(item, arrays, target) for item in value]
    if kind == "tuple":
        return tuple(_unflatten(item, arrays, target) for item in value)
    raise ValueError(f"unknown manifest entry {kind!r}")


def save(obj: Any, path: str | os.PathLike) -> None:
    """Write `obj` to `path` atomically: a temporary file in the same folder, then rename,
    so a crash never leaves a half-written file under `path`. Tensors and arrays on a GPU
    are copied to the host first."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    manifest = _flatten(obj, "", arrays)
    stored = {f"a{i}": array for i, array in enumerate(arrays.values())}
    names = dict(zip(arrays, stored))
    stored[_MANIFEST] = np.array(json.dumps({"tree": manifest, "names": names}))
    with atomic_write(path) as file:
        np.savez(file, **stored)


def load(path: str | os.PathLike, map_location: str | Device | None = None, *,
         device: str | Device | None = None) -> Any:
    """Read what `save` wrote, with every tensor and array on `map_location` (or `device`;
    "cpu" by default: NumPy arrays; "cuda": CuPy arrays). A missing, truncated or corrupt
    file raises an error that names the file."""
    target = _load_target(map_location, device)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            stored = {name: archive[name] for name in archive.files}
        header = json.loads(str(stored.pop(_MANIFEST)))
        arrays = {key: stored[name] for key, name in header["names"].items()}
        return _unflatten(header["tree"], arrays, target)
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, TypeError) as error:
        raise ValueError(
            f"{path} is not a readable autograd.save file (truncated or corrupt?): {error}"
        ) from None


def _load_target(map_location, device_name) -> Device:
    """The device `load` puts tensors on: map_location or device (the same if both)."""
    if map_location is not None and device_name is not None and \
            parse_device(map_location) != parse_device(device_name):
        raise ValueError(f"load: map_location={map_location!r} and device={device_name!r} "
                         "disagree; give one")
    spec = device_name if map_location is None else map_location
    if spec is not None and not isinstance(spec, (str, Device)):
        raise TypeError(f"load: map_location must be a device such as 'cpu' or 'cuda', got "
                        f"{type(spec).__name__}")
    return parse_device(spec)
