"""`draw_graph`: the backward graph from a tensor as Graphviz DOT text, rendered to SVG, PNG
or PDF when Graphviz's `dot` program is installed.

    out = model(x).sum()
    dot = autograd.viz.draw_graph(out, params=model, path="graph.svg")

One node per op (its output shape and dtype, and the arrays it saved for backward), one
per leaf (a parameter by its module path when `params` is given), edges along the data
flow, the output at the bottom. After `backward()`, `show_grads=True` adds the shape and
norm of each leaf's (and retained tensor's) `.grad`. Node ids follow the traversal order,
so a graph's text is always the same.

A whole model is thousands of ops: `collapse=model.down` draws every module called inside
`model.down` as one node, and `depth=1` every module the top one calls; both need the
module scopes, recorded when the forward ran inside `autograd.viz.module_scopes()`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from autograd import observers
from autograd.backend import to_device
from autograd.engine import topological_order
from autograd.function import AccumulateGrad

INSTALL_HINT = ("Graphviz's `dot` program is not installed: `apt-get install graphviz`, "
                "`brew install graphviz` or `conda install graphviz` (or render the .dot "
                "text with any Graphviz viewer)")


class GraphvizNotFound(RuntimeError):
    """Rendering needs Graphviz's `dot` program."""


def module_scopes() -> observers.watching:
    """Context manager: ops created inside remember the modules they ran in (for
    `draw_graph(collapse=..., depth=...)`)."""
    return observers.watching(observers.Observer())


def draw_graph(tensor, params=None, *, collapse=None, depth: int | None = None,
               show_grads: bool = False, path: str | Path | None = None) -> str:
    """The DOT text of the graph that backward from `tensor` walks. `params`: a Module or a
    {name: tensor} dict naming leaves; `collapse`: a module (or several) whose called
    submodules become one node each; `depth`: collapse the modules called at that depth
    (1: those the outermost module calls); `path`: also write the picture there (.svg,
    .png, .pdf; .dot writes the text)."""
    root = tensor._grad_node()
    if root is None:
        raise ValueError("draw_graph: this tensor has no graph (it does not require grad)")
    names = _leaf_names(params)
    order = topological_order(root)
    group_of = _grouping(order, collapse, depth)
    ids: dict = {}  # node or group name -> DOT id, in traversal order
    lines, edges = [], {}

    def node_id(node) -> str:
        key = group_of.get(node, node)
        if key not in ids:
            ids[key] = f"n{len(ids)}"
            lines.append(f"  {ids[key]} [{_attributes(key, node, names, show_grads)}];")
        return ids[key]

    output = f'  out [label="{_shape_text(tensor.shape, tensor.dtype)}", ' \
             'shape=ellipse, style=filled, fillcolor=darkolivegreen1];'
    edges[(node_id(root), "out")] = None
    for node in order:
        for parent in node.parents:
            if parent is None:
                continue
            source, target = node_id(parent), node_id(node)
            if source != target:
                edges[(source, target)] = None
    body = "\n".join([*lines, output, *(f"  {s} -> {t};" for s, t in edges)])
    dot = ("digraph autograd {\n  node [shape=box, fontname=monospace, fontsize=10];\n"
           f"{body}\n}}\n")
    if path is not None:
        render(dot, path)
    return dot


def render(dot: str, path: str | Path) -> Path:
    """Write DOT text to `path`: as is for .dot, else through `dot -T<suffix>` (raises
    GraphvizNotFound, saying how to install it, when Graphviz is missing)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "svg"
    if fmt in ("dot", "gv"):
        path.write_text(dot)
        return path
    program = shutil.which("dot")
    if program is None:
        raise GraphvizNotFound(f"cannot render {path}: {INSTALL_HINT}")
    subprocess.run([program, f"-T{fmt}", "-o", str(path)], input=dot.encode(), check=True)
    return path


def has_graphviz() -> bool:
    return shutil.which("dot") is not None


# ---- labels -------------------------------------------------------------------------------


def _leaf_names(params) -> dict[int, str]:
    if params is None:
        return {}
    items = params.named_parameters() if hasattr(params, "named_parameters") else \
        params.items()
    return {id(tensor): name for name, tensor in items}


def _shape_text(shape, dtype) -> str:
    return f"{tuple(shape)} {np.dtype(dtype).name}"


def _grad_text(tensor) -> str:
    if tensor is None or tensor.grad is None:
        return ""
    grad = to_device(tensor.grad.data, "cpu")
    return f"\\ngrad {tuple(grad.shape)} norm {float(np.linalg.norm(grad.ravel())):.4g}"


def _attributes(key, node, names: dict[int, str], show_grads: bool) -> str:
    if isinstance(key, tuple):  # a collapsed module: (path, class name, op count)
        path, class_name, count = key
        label = f"{path} ({class_name})\\n{count} op{'s' if count > 1 else ''}"
        return f'label="{label}", style="filled,rounded", fillcolor=lightsteelblue1'
    if isinstance(node, AccumulateGrad):
        tensor = node.tensor
        name = names.get(id(tensor))
        label = (f"{name}\\n" if name else "") + _shape_text(tensor.shape, tensor.dtype)
        label += _grad_text(tensor) if show_grads else ""
        return f'label="{label}", style=filled, fillcolor=lightblue'
    label = f"{node.name}Backward"
    meta = getattr(node, "output_meta", None)
    if meta is not None:
        label += f"\\n{_shape_text(*meta)}"
    saved = _saved_text(node)
    if saved:
        label += f"\\nsaved: {saved}"
    retained = node.tensor_hooks.retained() if node.tensor_hooks is not None \
        and node.tensor_hooks.retained is not None else None
    if show_grads and retained is not None:
        label += _grad_text(retained)
    return f'label="{label}"' + (", style=filled, fillcolor=orange" if saved else "")


def _saved_text(node) -> str:
    """What the op saved for backward: "input" or "output" arrays and other arrays, with
    their shapes; how many were released once a backward freed them."""
    if getattr(node, "released", False):
        return f"{node.released_saved} released" if node.released_saved else ""
    owners = {id(tensor.data): tensor for tensor, _ in getattr(node, "saved_versions", ())}
    parts = []
    for array in getattr(node, "saved", ()):
        if not hasattr(array, "shape"):
            continue
        owner = owners.get(id(array))
        role = "" if owner is None else "output " if owner.grad_fn is node else "input "
        parts.append(f"{role}{tuple(array.shape)}")
    return ", ".join(parts)


# ---- collapsing modules -------------------------------------------------------------------


def _grouping(order: list, collapse, depth: int | None) -> dict:
    """node -> (path, class name, op count) for the ops inside a collapsed module."""
    if collapse is None and depth is None:
        return {}
    targets = None
    if collapse is not None:
        modules = [collapse] if hasattr(collapse, "modules") else list(collapse)
        targets = {id(m) for module in modules for m in module.modules()}
    if not any(node.scope for node in order):
        raise ValueError("draw_graph(collapse=..., depth=...) needs the module scopes: "
                         "run the forward inside `with autograd.viz.module_scopes():`")
    members: dict[tuple[str, str], list] = {}
    for node in order:
        if isinstance(node, AccumulateGrad):
            continue
        entry = _collapsed_entry(node.scope, targets, depth)
        if entry is not None:
            module, path = entry
            members.setdefault((path or type(module).__name__, type(module).__name__),
                               []).append(node)
    group_of = {}
    for (path, class_name), nodes in members.items():
        for node in nodes:
            group_of[node] = (path, class_name, len(nodes))
    _absorb_leaves(order, group_of)
    return group_of


def _collapsed_entry(scope: tuple, targets: set[int] | None, depth: int | None):
    """The outermost module of `scope` that is collapsed, or None."""
    for level, (module, path) in enumerate(scope):
        if targets is not None and id(module) in targets:
            return module, path
        if depth is not None and level == depth:
            return module, path
    return None


def _absorb_leaves(order: list, group_of: dict) -> None:
    """A leaf whose every consumer is in one collapsed module is drawn inside it."""
    consumers: dict = {}
    for node in order:
        for parent in node.parents:
            if isinstance(parent, AccumulateGrad):
                consumers.setdefault(parent, set()).add(group_of.get(node, node))
    for leaf, groups in consumers.items():
        (group,) = groups if len(groups) == 1 else (None,)
        if isinstance(group, tuple):
            group_of[leaf] = group
