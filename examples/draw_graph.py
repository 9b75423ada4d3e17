"""Draw backward graphs: a two-layer MLP, one ResBlock of the UNet, and the whole UNet
with every block it calls collapsed to one node.

    python examples/draw_graph.py [--out docs] [--parts mlp resblock unet]

Writes OUT/graph-PART.svg with Graphviz's `dot` program, or OUT/graph-PART.dot (and how
to render it) when Graphviz is not installed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import autograd
from autograd import nn, viz
from tinydiff.models import ResBlock, build_model


def mlp_graph() -> str:
    """A two-layer MLP's loss after backward, with its parameters' gradients."""
    model = nn.Sequential(nn.Linear(2, 8), nn.SiLU(), nn.Linear(8, 1))
    loss = nn.functional.mse_loss(model(autograd.randn(4, 2)), autograd.zeros(4, 1))
    loss.backward(retain_graph=True)
    return viz.draw_graph(loss, params=model, show_grads=True)


def resblock_graph() -> str:
    """One ResBlock of mnist-tiny's first level, on a (1, 32, 8, 8) input."""
    block = ResBlock(32, 32, embed_dim=128, groups=8, dropout=0.0)
    out = block(autograd.randn(1, 32, 8, 8), autograd.randn(1, 128))
    return viz.draw_graph(out.sum(), params=block)


def unet_graph() -> str:
    """The micro UNet, one node per module it calls (depth=1)."""
    model = build_model("micro")
    with viz.module_scopes():
        out = model(autograd.randn(1, 1, 28, 28), np.array([10]))
    return viz.draw_graph(out.sum(), params=model, depth=1)


PARTS = {"mlp": mlp_graph, "resblock": resblock_graph, "unet": unet_graph}


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=list(PARTS))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    autograd.manual_seed(0)
    written = []
    for part in args.parts:
        dot = PARTS[part]()
        suffix = ".svg" if viz.has_graphviz() else ".dot"
        written.append(viz.render(dot, args.out / f"graph-{part}{suffix}"))
        print(f"saved {written[-1]}")
    if not viz.has_graphviz():
        print(f"{viz.INSTALL_HINT}; then: dot -Tsvg FILE.dot -o FILE.svg")
    return written


if __name__ == "__main__":
    main()
