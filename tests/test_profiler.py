"""The profiler: every op's forward and backward counted once, its times within the wall
time, grouped by op and by module."""

from __future__ import annotations

import json
import time

import autograd
from autograd import nn
from autograd.profiler import profile


def _step(model, x):
    loss = model(x).sum()
    loss.backward()


def test_profiler_counts_every_op_and_its_times_fit_in_the_wall_time(tmp_path):
    autograd.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x = autograd.randn(5, 3)
    _step(model, x)  # warm-up
    started = time.perf_counter()
    with profile() as prof:
        _step(model, x)
    wall = time.perf_counter() - started
    # Linear: weight.T (Permute), MatMul, Add; Tanh; Linear; sum: 8 ops, each with backward
    calls = {row.name: row.calls for row in prof.key_averages()}
    assert calls == {"Permute": 2, "MatMul": 2, "Add": 2, "Tanh": 1, "Sum": 1,
                     "PermuteBackward": 2, "MatMulBackward": 2, "AddBackward": 2,
                     "TanhBackward": 1, "SumBackward": 1}
    total = sum(event.duration for event in prof.events)
    assert 0 < total <= prof.wall_seconds <= wall
    assert all(started <= e.start and e.start + e.duration <= started + wall
               for e in prof.events)

    modules = {row.name: row for row in prof.key_averages(group_by="module")}
    assert set(modules) == {"Sequential", "0", "1", "2", "(no module)"}
    assert [modules[n].calls for n in ("Sequential", "0", "1", "2")] == [1, 1, 1, 1]
    inner = sum(modules[n].total_ms for n in ("0", "1", "2"))
    assert abs(modules["Sequential"].total_ms - inner) < 1e-9  # no op of its own
    assert modules["Sequential"].self_ms == 0.0
    # the sum runs outside the model; its backward counts there too
    assert modules["(no module)"].total_ms > 0

    table = prof.table(sort_by="calls", row_limit=3)
    assert table.splitlines()[0].split()[:5] == ["op", "calls", "total", "ms", "self"]
    assert "MatMul " in table and "16 op events" in table
    trace = json.loads(prof.export_chrome_trace(tmp_path / "trace.json").read_text())
    assert len(trace["traceEvents"]) == 16


def test_profiler_names_the_kernel_that_ran_and_is_off_outside_its_block():
    x = autograd.randn(4, 4, requires_grad=True)
    nn.functional.silu(x).sum().backward()  # warm-up (numba compiles)
    with profile() as prof:
        nn.functional.silu(x).sum().backward()
    backends = {row.name: row.backends for row in prof.key_averages()}
    assert backends["SiLU"] == ["numba"] and backends["Sum"] == ["numpy"]
    count = len(prof.events)
    (x * 2).sum().backward()
    assert len(prof.events) == count
    assert not autograd.observers.observers


def test_train_profile_prints_the_tables_and_saves_nothing(tmp_path, capsys):
    from tinydiff.cli import main

    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--preset", "micro", "--batch-size", "4",
                 "--profile", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "1 training steps:" in printed and "Conv2dBackward" in printed
    assert "down.0.res_blocks.0" in printed and not (run / "ckpt.npz").exists()
