"""Shape ops: reshape and friends, permute, broadcasting, indexing, gather, cat/stack/split,
pad. Each backward routes the gradient back to where its elements came from."""

from __future__ import annotations

import builtins
import math

import numpy as np

from autograd.backend import device_of, get_array_module, to_device
from autograd.function import Function
from autograd.ops.reduction import normalize_dims
from autograd.tensor import Tensor


def _shape_arg(shape) -> tuple[int, ...]:
    """Accept reshape(2, 3), reshape((2, 3)) and reshape([2, 3])."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


class Reshape(Function):
    is_view = True

    def __init__(self, shape) -> None:
        self.shape = shape

    def forward(self, a):
        self.input_shape = a.shape
        try:
            return a.reshape(self.shape)
        except ValueError:
            raise ValueError(
                f"cannot reshape a tensor of shape {a.shape} ({a.size} elements) into shape "
                f"{self.shape}"
            ) from None

    def backward(self, grad):
        return grad.reshape(self.input_shape)


class Permute(Function):
    is_view = True

    def __init__(self, dims) -> None:
        self.dims = dims

    def forward(self, a):
        return a.transpose(self.dims)

    def backward(self, grad):  # the inverse permutation
        return grad.transpose(tuple(int(d) for d in np.argsort(self.dims)))


class BroadcastTo(Function):
    is_view = True

    def __init__(self, shape) -> None:
        self.shape = shape

    def forward(self, a):
        try:
            return get_array_module(a).broadcast_to(a, self.shape)
        except ValueError:
            raise ValueError(f"cannot broadcast shape {a.shape} to {self.shape}") from None

    def backward(self, grad):  # the engine sums the gradient back to the input's shape
        return grad


def reshape(a: Tensor, *shape) -> Tensor:
    shape = _shape_arg(shape)
    return a if shape == a.shape else Reshape.apply(a, shape=shape)


view = reshape


def flatten(a: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    if a.ndim == 0:
        return reshape(a, 1)
    start, end = normalize_dims(start_dim, a.ndim)[0], normalize_dims(end_dim, a.ndim)[0]
    shape = a.shape[:start] + (math.prod(a.shape[start : end + 1]),) + a.shape[end + 1 :]
    return reshape(a, shape)


def squeeze(a: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    dims = normalize_dims(dim, a.ndim)
    return reshape(a, tuple(n for i, n in enumerate(a.shape) if not (i in dims and n == 1)))


def unsqueeze(a: Tensor, dim: int) -> Tensor:
    if not -a.ndim - 1 <= dim <= a.ndim:
        raise IndexError(f"unsqueeze dim {dim} is out of range for a tensor with {a.ndim} dims")
    dim = dim % (a.ndim + 1)
    return reshape(a, a.shape[:dim] + (1,) + a.shape[dim:])


def permute(a: Tensor, *dims) -> Tensor:
    dims = _shape_arg(dims)
    if sorted(d % builtins.max(a.ndim, 1) for d in dims) != list(range(a.ndim)):
        raise ValueError(f"permute dims {dims} are not a permutation of {a.ndim} dims")
    return Permute.apply(a, dims=tuple(d % a.ndim for d in dims))


def transpose(a: Tensor, dim0: int, dim1: int) -> Tensor:
    dims = list(range(a.ndim))
    i, j = normalize_dims(dim0, a.ndim)[0], normalize_dims(dim1, a.ndim)[0]
    dims[i], dims[j] = dims[j], dims[i]
    return Permute.apply(a, dims=tuple(dims))


def broadcast_to(a: Tensor, shape) -> Tensor:
    shape = tuple(shape)
    return a if shape == a.shape else BroadcastTo.apply(a, shape=shape)


def expand(a: Tensor, *sizes) -> Tensor:
    """Broadcast to `sizes`; -1 keeps a dimension's size (PyTorch's expand)."""
    sizes = _shape_arg(sizes)
    lead = len(sizes) - a.ndim
    if lead < 0:
        raise ValueError(f"expand to {sizes} has fewer dims than the tensor's shape {a.shape}")
    shape = tuple(a.shape[i - lead] if n == -1 else n for i, n in enumerate(sizes))
    return broadcast_to(a, shape)


# ---- indexing -----------------------------------------------------------------------------


def index_key(index, like=None):
    """An index with tensors and lists replaced by arrays, on the device of the array
    `like` that it indexes (index arrays from the host go to the GPU)."""
    if isinstance(index, tuple):
        return tuple(index_key(i, like) for i in index)
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, list):
        index = np.asarray(index)
    elif isinstance(index, np.generic):  # a NumPy number: a basic index, not an index array
        return index.item()
    if like is not None and hasattr(index, "dtype"):
        return to_device(index, device_of(like))
    return index


def _is_basic(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return all(
        isinstance(p, (int, np.integer, slice)) or p is None or p is Ellipsis for p in parts
    )


def _is_device_array(part) -> bool:
    return hasattr(part, "dtype") and not isinstance(part, (np.ndarray, np.generic))


def _as_python_number(part):
    return part.item() if isinstance(part, np.generic) else part


def _index_for(a: Tensor, index):
    """`index` (tensors and lists already arrays) ready to index the array of `a`.

    For a GPU tensor, host index arrays move to its device, once NumPy has checked on the
    host that they fit (CuPy wraps out-of-range indices around instead of raising), and NumPy
    scalars become Python numbers (a 0-d device array would turn basic indexing into
    advanced indexing). An index on a GPU for a CPU tensor is an error, as in PyTorch."""
    parts = index if isinstance(index, tuple) else (index,)
    on_gpu = [p for p in parts if _is_device_array(p)]
    if isinstance(a.data, np.ndarray):
        if on_gpu:
            raise RuntimeError(f"indexing a tensor on cpu with an index on "
                               f"{device_of(on_gpu[0])}: move the index with .cpu()")
        return index
    parts = tuple(_as_python_number(p) for p in parts)
    index = parts if isinstance(index, tuple) else parts[0]
    if not on_gpu and not _is_basic(index):
        try:  # indexing a broadcast scalar costs only the result's size
            np.broadcast_to(np.zeros((), np.bool_), a.shape)[index]
        except IndexError as error:
            raise IndexError(f"index {index!r} into shape {a.shape}: {error}") from None
    return index_key(index, a.data)


def _scatter_key(index):
    """The key for `xp.add.at`: boolean masks become integer index arrays."""
    parts = index if isinstance(index, tuple) else (index,)
    out = []
    for part in parts:
        if hasattr(part, "dtype") and part.dtype == np.bool_:
            out.extend(get_array_module(part).nonzero(part))
        else:
            out.append(part)
    return tuple(out)


class GetItem(Function):
    def __init__(self, index) -> None:
        self.index = index
        self.basic = _is_basic(index)  # basic indexing: a view, no repeated elements

    def forward(self, a):
        self.input_shape, self.input_dtype = a.shape, a.dtype
        try:
            return a[self.index]
        except IndexError as error:
            raise IndexError(f"index {self.index!r} into shape {a.shape}: {error}") from None

    def backward(self, grad):  # scatter back; repeated indices add up
        xp = get_array_module(grad)
        out = xp.zeros(self.input_shape, dtype=grad.dtype)
        if self.basic:
            out[self.index] = grad
        else:
            xp.add.at(out, _scatter_key(self.index), grad)
        return out


def getitem(a: Tensor, index) -> Tensor:
    index = _index_for(a, index_key(index))
    out = GetItem.apply(a, index=index)
    if _is_basic(index):
        out._version_counter = a._version_counter
    return out


def _along_axis_key(index, dim: int) -> tuple:
    """The key of `xp.add.at` that reaches, for each element of `index`, the position it
    names along `dim` (an open grid over the other dims, as np.indices(sparse=True))."""
    xp = get_array_module(index)
    key = []
    for d, size in enumerate(index.shape):
        shape = (1,) * d + (size,) + (1,) * (index.ndim - d - 1)
        key.append(index if d == dim else xp.arange(size).reshape(shape))
    return tuple(key)


class Gather(Function):
    def __init__(self, dim: int, index) -> None:
        self.dim, self.index = dim, index

    def forward(self, a):
        self.input_shape = a.shape
        return get_array_module(a).take_along_axis(a, self.index, axis=self.dim)

    def backward(self, grad):  # scatter-add into the gathered positions
        xp = get_array_module(grad)
        out = xp.zeros(self.input_shape, dtype=grad.dtype)
        xp.add.at(out, _along_axis_key(self.index, self.dim), grad)
        return out


def gather(a: Tensor, dim: int, index) -> Tensor:
    """out[i][j] = a[i][index[i][j]] along `dim` (PyTorch's gather). A host index moves to
    the tensor's device (checked on the host first: a GPU would wrap it around)."""
    index = index_key(index)
    if not hasattr(index, "dtype"):
        index = np.asarray(index)
    if not np.issubdtype(index.dtype, np.integer):
        raise TypeError(f"gather index must be integers, got dtype {index.dtype}")
    if index.ndim != a.ndim:
        raise ValueError(f"gather index has {index.ndim} dims, the tensor has {a.ndim}")
    dim = normalize_dims(dim, a.ndim)[0]
    if isinstance(a.data, np.ndarray):
        if _is_device_array(index):
            raise RuntimeError(f"gather: the index is on {device_of(index)} but the tensor is "
                               "on cpu: move the index with .cpu()")
    elif isinstance(index, np.ndarray):
        size = a.shape[dim]
        if index.size and (index.min() < -size or index.max() >= size):
            bad = index[(index < -size) | (index >= size)].flat[0]
            raise IndexError(f"gather: index {bad} is out of bounds for dim {dim} with size "
                             f"{size}")
        index = index_key(index, a.data)
    return Gather.apply(a, dim=dim, index=index)


# ---- joining and splitting ----------------------------------------------------------------


def _is_channels_last(a: np.ndarray) -> bool:
    """An (N, C, H, W) array whose memory is (N, H, W, C)."""
    return a.ndim == 4 and a.transpose(0, 2, 3, 1).flags.c_contiguous


class Cat(Function):
    def __init__(self, dim: int) -> None:
        self.dim = dim

    def forward(self, *arrays):
        xp = get_array_module(arrays[0])  # Function.apply checked they share a device
        self.bounds = [int(b) for b in np.cumsum([a.shape[self.dim] for a in arrays])[:-1]]
        if self.dim == 1 and all(_is_channels_last(a) for a in arrays):
            # Keep convolutions' channels-last memory (a UNet's skip concatenation feeds a
            # norm and a conv, which would each transpose an NCHW result back).
            last = xp.concatenate([a.transpose(0, 2, 3, 1) for a in arrays], axis=3)
            return last.transpose(0, 3, 1, 2)
        return xp.concatenate(arrays, axis=self.dim)

    def backward(self, grad):  # each input gets its slice
        return tuple(get_array_module(grad).split(grad, self.bounds, axis=self.dim))


class Stack(Function):
    def __init__(self, dim: int) -> None:
        self.dim = dim

    def forward(self, *arrays):
        return get_array_module(arrays[0]).stack(arrays, axis=self.dim)

    def backward(self, grad):  # input i gets the slice i along dim
        moved = get_array_module(grad).moveaxis(grad, self.dim, 0)
        return tuple(moved[i] for i in range(moved.shape[0]))


def _check_same(tensors, what: str, dim: int) -> None:
    from autograd.ops.elementwise import as_tensors

    if not tensors:
        raise ValueError(f"{what} needs at least one tensor")
    as_tensors(*tensors)  # raises on mixed float dtypes
    shapes = [t.shape for t in tensors]
    ndims = {len(s) for s in shapes}
    if len(ndims) != 1:
        raise ValueError(f"{what} needs tensors with the same number of dims, got {shapes}")
    for s in shapes:
        if s[:dim] + s[dim + 1 :] != shapes[0][:dim] + shapes[0][dim + 1 :]:
            raise ValueError(f"{what}: shapes {shapes} differ outside dim {dim}")


def cat(tensors, dim: int = 0, *, axis: int | None = None) -> Tensor:
    tensors = list(tensors)
    dim = dim if axis is None else axis
    if tensors:
        dim = normalize_dims(dim, tensors[0].ndim)[0]
    _check_same(tensors, "cat", dim)
    return Cat.apply(*tensors, dim=dim)


concatenate = cat


def stack(tensors, dim: int = 0, *, axis: int | None = None) -> Tensor:
    tensors = list(tensors)
    dim = dim if axis is None else axis
    if tensors:
        dim = dim % (tensors[0].ndim + 1)
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"stack needs tensors of one shape, got {sorted(shapes)}")
    _check_same(tensors, "stack", 0)
    return Stack.apply(*tensors, dim=dim)


def split(a: Tensor, split_size_or_sections, dim: int = 0) -> tuple[Tensor, ...]:
    """Split into pieces of `split_size` (the last may be smaller) or of the given sizes."""
    dim = normalize_dims(dim, a.ndim)[0]
    size = a.shape[dim]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        if step <= 0:
            raise ValueError(f"split size must be positive, got {step}")
        sections = [builtins.min(step, size - start) for start in range(0, size, step)]
    else:
        sections = list(split_size_or_sections)
        if builtins.sum(sections) != size:
            raise ValueError(f"split sizes {sections} do not add up to dim {dim}'s size {size}")
    pieces, start = [], 0
    for length in sections:
        index = (slice(None),) * dim + (slice(start, start + length),)
        pieces.append(getitem(a, index))
        start += length
    return tuple(pieces)


def chunk(a: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    size = a.shape[normalize_dims(dim, a.ndim)[0]]
    return split(a, builtins.max(1, math.ceil(size / chunks)), dim)


class Pad(Function):
    def __init__(self, widths, value: float) -> None:
        self.widths, self.value = widths, value

    def forward(self, a):
        return get_array_module(a).pad(a, self.widths, mode="constant",
                                       constant_values=self.value)

    def backward(self, grad):  # the gradient of the unpadded region
        return grad[tuple(slice(lo, grad.shape[i] - hi) for i, (lo, hi) in
                          enumerate(self.widths))]


def pad(a: Tensor, pad: tuple[int, ...], mode: str = "constant", value: float = 0.0) -> Tensor:
    """Pad the last len(pad)//2 dims, last dim first: (left, right, top, bottom, ...)."""
    if mode != "constant":
        raise NotImplementedError(f"pad mode {mode!r}: only 'constant' is implemented")
    if len(pad) % 2 or len(pad) // 2 > a.ndim:
        raise ValueError(f"pad {pad} must hold a (before, after) pair per dim, at most {a.ndim}")
    if builtins.min(pad, default=0) < 0:
        raise ValueError(f"pad {pad}: negative padding is not supported")
    widths = [(0, 0)] * a.ndim
    for i in range(len(pad) // 2):
        widths[a.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return Pad.apply(a, widths=tuple(widths), value=value)
