"""draw_graph: the DOT text of a fixed graph, collapsed modules, gradients, rendering."""

from __future__ import annotations

import re
import shutil

import pytest

import autograd
from autograd import nn, viz

EXPECTED = """digraph autograd {
  node [shape=box, fontname=monospace, fontsize=10];
  n0 [label="SumBackward\\n() float32"];
  n1 [label="MulBackward\\n(2, 3) float32\\nsaved: input (2, 3), input (3,)", style=filled, fillcolor=orange];
  n2 [label="ExpBackward\\n(2, 3) float32\\nsaved: output (2, 3)", style=filled, fillcolor=orange];
  n3 [label="w\\n(3,) float32", style=filled, fillcolor=lightblue];
  n4 [label="(2, 3) float32", style=filled, fillcolor=lightblue];
  out [label="() float32", shape=ellipse, style=filled, fillcolor=darkolivegreen1];
  n0 -> out;
  n1 -> n0;
  n2 -> n1;
  n3 -> n1;
  n4 -> n2;
}
"""  # noqa: E501


def _graph():
    x = autograd.ones(2, 3, requires_grad=True)
    w = autograd.tensor([1.0, 2.0, 3.0], requires_grad=True)
    return (x.exp() * w).sum(), x, w


def test_dot_text_of_a_fixed_graph_is_exact_and_deterministic():
    out, _, w = _graph()
    assert viz.draw_graph(out, params={"w": w}) == EXPECTED
    assert viz.draw_graph(out, params={"w": w}) == EXPECTED


def test_gradients_are_annotated_after_backward_and_saved_arrays_marked_released():
    out, _, w = _graph()
    out.backward()
    dot = viz.draw_graph(out, params={"w": w}, show_grads=True)
    assert 'label="w\\n(3,) float32\\ngrad (3,) norm 9.416"' in dot  # 2e sqrt(3)
    assert "saved: 2 released" in dot and "saved: 1 released" in dot


def test_modules_collapse_by_depth_or_by_module():
    autograd.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(3, 4), nn.SiLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="module_scopes"):
        viz.draw_graph(mlp(autograd.randn(5, 3)).sum(), params=mlp, depth=1)
    with viz.module_scopes():
        out = mlp(autograd.randn(5, 3)).sum()
    dot = viz.draw_graph(out, params=mlp, depth=1)
    assert re.findall(r'  n\d+ \[label="([^"]*)"', dot) == [
        "SumBackward\\n() float32", "2 (Linear)\\n3 ops", "1 (SiLU)\\n1 op",
        "0 (Linear)\\n3 ops"]
    assert "weight" not in dot  # drawn inside their Linear
    one = viz.draw_graph(out, params=mlp, collapse=mlp[2])
    assert '"2 (Linear)\\n3 ops"' in one and "0.weight" in one and "2.weight" not in one


def test_render_writes_dot_text_and_says_how_to_install_graphviz(tmp_path, monkeypatch):
    out, _, w = _graph()
    assert (viz.render(EXPECTED, tmp_path / "g.dot")).read_text() == EXPECTED
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(viz.GraphvizNotFound, match="apt-get install graphviz"):
        viz.draw_graph(out, path=tmp_path / "g.svg")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_render_svg_with_graphviz(tmp_path):
    out, _, _ = _graph()
    path = tmp_path / "g.svg"
    viz.draw_graph(out, path=path)
    assert "<svg" in path.read_text()
