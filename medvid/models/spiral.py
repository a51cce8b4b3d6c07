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
@torch.inference_mode(False)  # cached for training too: never an inference tensor, whoever asks first
def _scan_sets(frames: int, h: int, w: int, orders: tuple[int, ...], device: str):
    """See ``scan_indices``; cached per grid, orders and device."""
    n = h * w

    def grouping(k: int, by_rows: bool) -> torch.Tensor:
        # rows grouping: one (frames x w) grid per token row; columns grouping: one (frames x h) grid per column
        cols = w if by_rows else h
        order = torch.tensor(spiral_order(frames, cols, k))
        fi, along = order // cols, order % cols  # grid cell -> (frame, position along the row/column)
        line = torch.arange(h if by_rows else w)[:, None]
        if by_rows:
            return fi * n + line * w + along  # (h, frames*w): token index of each sequence position
        return fi * n + along * w + line  # (w, frames*h)

    scans = [(k, by_rows) for by_rows in (True, False) for k in orders]
    sets = [scans] if h == w else [scans[: len(orders)], scans[len(orders):]]  # equal lengths share a set
    out = []
    for group in sets:
        gather = torch.stack([grouping(k, r).reshape(-1) for k, r in group])  # (S, f*n): scan j, (line, pos)
        offset = torch.arange(len(group))[:, None] * (frames * n)
        inverse = torch.argsort(gather, dim=1) + offset
        length = frames * (w if group[0][1] else h)
        out.append(tuple(v.reshape(-1).to(device) for v in (gather, inverse, gather + offset)) + (len(group), length))
    return tuple(out)


def scan_indices(frames: int, h: int, w: int, orders: tuple[int, ...], device: torch.device):
    """Gather indices for all spiral scans of a (frames, h, w) token grid, in sets of equal length.

    The scans are, in this order: each order in ``orders`` over the rows grouping (one frames x w grid
    per token row), then each over the columns grouping (one frames x h grid per column). Scans of
    one length form one set (one set when h == w, else one per grouping). Per set, with S scans:

    * ``gather`` (S*f*n,): ``tokens[:, gather]`` (tokens flattened row-major over (frame, row, col))
      lists scan j's sequences one after another, so viewed as (S * lines, length) they are the
      sequences to scan;
    * ``inverse`` (S*f*n,): ``seqs[:, inverse]`` puts them back: (S, f*n) in token order;
    * ``placed`` (S*f*n,): ``gather`` plus j*f*n for scan j, the inverse permutation of ``inverse``.
    Returns a tuple of (gather, inverse, placed, S, sequence length) per set.
    """
    return _scan_sets(frames, h, w, tuple(orders), str(device))
