"""autograd's own threads (autograd/kernels/threads.py): the thread knob (set_num_threads:
numba's threads, BLAS kept on one); a batch cut into one part per thread, the parts run on
worker threads with one numba thread each, never nested, errors raised after every part has
ended; and the matrix product split over the threads (autograd/kernels/matmul.py) against
NumPy's, with its gradient check."""

from __future__ import annotations

import threading
import time

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_testing import num_threads
from op_testing import arrays
from threadpoolctl import threadpool_info

import autograd
from autograd.kernels import matmul, registry, threads

TWO = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")


@pytest.fixture
def two_threads():
    with num_threads(2):
        yield


def _blas_threads() -> set[int]:
    return {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}


def test_set_num_threads_sets_numba_and_keeps_blas_on_one_thread():
    before = autograd.get_num_threads()
    for n in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        with num_threads(n):
            assert autograd.get_num_threads() == n and _blas_threads() <= {1}
    assert autograd.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -1, 2.0, 10_000])
def test_set_num_threads_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="set_num_threads"):
        autograd.set_num_threads(bad)


@given(count=st.integers(0, 40), workers=st.integers(1, 8))
def test_parts_cut_a_range_into_contiguous_near_equal_pieces(count, workers):
    pieces = threads.parts(count, workers)
    assert [i for piece in pieces for i in piece] == list(range(count))
    assert len(pieces) == max(1, min(count, workers)) if count else len(pieces) <= 1
    sizes = [len(piece) for piece in pieces]
    assert all(sizes) or count == 0
    assert max(sizes, default=0) - min(sizes, default=0) <= 1


@TWO
def test_map_parts_runs_parts_in_order_on_the_caller_and_a_worker(two_threads):
    def part(images: range):
        return (images, threading.current_thread().name, autograd.get_num_threads())

    (first, caller, caller_threads), (second, worker, worker_threads) = \
        threads.map_parts(part, 5)
    assert (first, second) == (range(0, 2), range(2, 5))
    assert caller == threading.current_thread().name and worker.startswith("autograd-worker")
    assert caller_threads == worker_threads == 1  # one numba thread in each part
    assert autograd.get_num_threads() == 2  # the caller's own setting is back


@TWO
def test_work_never_nests_and_one_thread_runs_inline(two_threads):
    inner = threads.map_parts(lambda outer: threads.map_parts(len, 6), 2)
    assert inner == [[6], [6]]  # a part calling map_parts again runs it in its own thread
    autograd.set_num_threads(1)
    assert threads.map_parts(lambda part: threading.current_thread().name, 6) == [
        threading.current_thread().name]


@TWO
def test_an_error_in_a_part_is_raised_after_every_part_has_ended(two_threads):
    finished = []

    def part(images: range):
        if images.start == 0:
            raise ValueError("part 0 failed")
        time.sleep(0.05)
        finished.append(images)

    with pytest.raises(ValueError, match="part 0 failed"):
        threads.map_parts(part, 4)
    assert finished == [range(2, 4)]


def test_ordered_sum_adds_in_order_into_a_new_array():
    arrays_ = [np.float32([1e8]), np.float32([1.0]), np.float32([-1e8])]
    total = threads.ordered_sum(arrays_)
    assert total[0] == np.float32(0) and total is not arrays_[0] and arrays_[0][0] == 1e8


# ---- the matrix product on the threads --------------------------------------------------


@st.composite
def matmul_operands(draw):
    """Two float64 operands of at least 2 dims with NumPy-broadcast batch dims, few or many
    rows (the split is by rows, or by columns when rows are fewer than threads)."""
    batch = draw(st.lists(st.integers(1, 3), max_size=2))
    a_batch = [draw(st.sampled_from([size, 1])) for size in batch]
    b_batch = [draw(st.sampled_from([size, 1])) for size in batch][draw(st.integers(0, 2)):]
    rows, inner, columns = (draw(st.integers(1, 7)) for _ in range(3))
    a = draw(arrays((*a_batch, rows, inner)))
    b = draw(arrays((*b_batch, inner, columns)))
    return a, b


@TWO
@given(operands=matmul_operands())
def test_matmul_on_threads_is_numpys_product(operands):
    a, b = operands
    with num_threads(2):
        out = matmul.matmul_on_threads(a, b)
    expected = np.matmul(a, b)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@TWO
@given(operands=matmul_operands())
def test_matmul_gradients_through_the_threads(operands):
    """With every product split (the size floor at 0), MatMul's forward and both gradients
    run on the threads, and its gradient check holds."""
    a, b = (autograd.tensor(x, requires_grad=True) for x in operands)
    with pytest.MonkeyPatch.context() as patch, num_threads(2):
        patch.setattr(matmul, "MIN_MULTIPLY_ADDS", 0)
        assert registry.lookup("matmul", a.data, b.data) is matmul.matmul_on_threads
        assert autograd.gradcheck(lambda x, y: x @ y, [a, b])


@TWO
def test_only_large_float_products_are_split(two_threads):
    rows = matmul.MIN_MULTIPLY_ADDS // (128 * 128)  # (rows, 128) @ (128, 128): the floor
    big = np.ones((rows, 128), np.float32), np.ones((128, 128), np.float32)
    assert registry.lookup("matmul", *big) is matmul.matmul_on_threads
    assert registry.lookup("matmul", big[0][1:], big[1]) is None  # one row short
    assert registry.lookup("matmul", *(x.astype(np.int64) for x in big)) is None
    assert registry.lookup("matmul", big[0], big[1].astype(np.float64)) is None
    autograd.set_num_threads(1)
    assert registry.lookup("matmul", *big) is None  # nothing to split over
