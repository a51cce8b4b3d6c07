"""The 16 spiral scan orders of a rows x cols grid (MedSora, section 3.1).

A grid is read row-major (index = row * cols + col); in MedSora the rows are frames and the
columns are positions along one spatial axis. An order is a gather index: ``seq = x[:, order]``
visits the grid along the spiral, ``x = seq[:, inverse(order)]`` puts it back.

Orders, as in the reference: 0-7 start from the clockwise spiral, 8-15 from the counter-clockwise
one; within each eight: plain, left-right flip, up-down flip, both flips; odd orders are the
reverse of the even order before them (order 2k+1 = order 2k read backwards). Block i scans order
2i mod 16 and its reverse 2i+1.
"""

from __future__ import annotations

from functools import lru_cache

import torch

NUM_ORDERS = 16


def _spiral_cells(rows: int, cols: int, clockwise: bool) -> list[tuple[int, int]]:
    """Cells of the grid along a spiral from the top-left corner, inwards."""
    out: list[tuple[int, int]] = []
    top, bottom, left, right = 0, rows - 1, 0, cols - 1
    while top <= bottom and left <= right:
        if clockwise:  # right along the top, down the right side, left along the bottom, up the left
            out += [(top, c) for c in range(left, right + 1)]
            out += [(r, right) for r in range(top + 1, bottom + 1)]
            if top < bottom:
                out += [(bottom, c) for c in range(right - 1, left - 1, -1)]
            if left < right:
                out += [(r, left) for r in range(bottom - 1, top, -1)]
        else:  # down the left side, right along the bottom, up the right side, left along the top
            out += [(r, left) for r in range(top, bottom + 1)]
            out += [(bottom, c) for c in range(left + 1, right + 1)]
            if left < right:
                out += [(r, right) for r in range(bottom - 1, top - 1, -1)]
            if top < bottom:
                out += [(top, c) for c in range(right - 1, left, -1)]
        top, bottom, left, right = top + 1, bottom - 1, left + 1, right - 1
    return out


@lru_cache(maxsize=None)
def _orders(rows: int, cols: int) -> tuple[tuple[int, ...], ...]:
    orders = []
    for clockwise in (True, False):
        cells = _spiral_cells(rows, cols, clockwise)
        for flip_lr, flip_ud in ((False, False), (True, False), (False, True), (True, True)):
            idx = [((rows - 1 - r) if flip_ud else r) * cols + ((cols - 1 - c) if flip_lr else c) for r, c in cells]
            orders.append(tuple(idx))
            orders.append(tuple(reversed(idx)))
    return tuple(orders)


def spiral_order(rows: int, cols: int, k: int) -> list[int]:
    """Spiral order ``k`` (0..15) of a rows x cols grid as a gather index of length rows*cols."""
    if rows < 1 or cols < 1:
        raise ValueError(f"spiral_order: the grid must be at least 1x1, got {rows}x{cols}")
    if not 0 <= k < NUM_ORDERS:
        raise ValueError(f"spiral_order: k must be in 0..{NUM_ORDERS - 1}, got {k}")
    return list(_orders(rows, cols)[k])


def inverse_order(order: list[int]) -> list[int]:
    """The gather index that undoes ``order``."""
    inv = [0] * len(order)
    for i, j in enumerate(order):
        inv[j] = i
    return inv


@lru_cache(maxsize=None)
def _pair_tensors(rows: int, cols: int, k: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    fwd = spiral_order(rows, cols, k)
    return torch.tensor(fwd, device=device), torch.tensor(inverse_order(fwd), device=device)


def order_tensors(rows: int, cols: int, k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, inverse) of spiral order ``k`` as long tensors on ``device`` (cached)."""
    return _pair_tensors(rows, cols, k, str(device))
