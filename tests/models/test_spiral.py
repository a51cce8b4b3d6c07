"""Spiral scan orders: permutations, inverses, 16 distinct orders, spiral geometry."""

import pytest
import torch

from medvid.models.spiral import NUM_ORDERS, inverse_order, spiral_order


@pytest.mark.parametrize("rows,cols", [(1, 1), (1, 7), (5, 1), (2, 2), (4, 8), (6, 8), (3, 5)])
def test_orders_are_permutations_with_inverses(rows, cols):
    x = torch.arange(rows * cols) * 10
    for k in range(NUM_ORDERS):
        order = spiral_order(rows, cols, k)
        assert sorted(order) == list(range(rows * cols))
        assert torch.equal(x[order][inverse_order(order)], x)
        if k % 2:  # odd orders are the previous order read backwards
            assert order == spiral_order(rows, cols, k - 1)[::-1]


@pytest.mark.parametrize("rows,cols", [(4, 8), (6, 8), (3, 3), (8, 8)])
def test_sixteen_distinct_orders(rows, cols):
    assert len({tuple(spiral_order(rows, cols, k)) for k in range(NUM_ORDERS)}) == 16


@pytest.mark.parametrize("rows,cols", [(4, 8), (5, 3), (1, 6), (7, 1)])
def test_orders_walk_between_grid_neighbours(rows, cols):
    for k in range(NUM_ORDERS):
        cells = [divmod(i, cols) for i in spiral_order(rows, cols, k)]
        for (r0, c0), (r1, c1) in zip(cells, cells[1:]):
            assert abs(r0 - r1) + abs(c0 - c1) == 1


def test_clockwise_and_counter_clockwise_start():
    # 3x3, cells numbered row-major: clockwise from the top-left corner goes right, then down
    assert spiral_order(3, 3, 0) == [0, 1, 2, 5, 8, 7, 6, 3, 4]
    assert spiral_order(3, 3, 8) == [0, 3, 6, 7, 8, 5, 2, 1, 4]  # counter-clockwise: down first
    assert spiral_order(3, 3, 2) == [2, 1, 0, 3, 6, 7, 8, 5, 4]  # left-right flip of order 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="k must be"):
        spiral_order(2, 2, 16)
    with pytest.raises(ValueError, match="1x1"):
        spiral_order(0, 3, 0)
