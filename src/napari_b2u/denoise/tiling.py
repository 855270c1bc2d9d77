"""The block plan of out-of-core denoising: which frames and which part of the frame each task
denoises, and which tiles it must compute for that (numpy only, no torch).

The in-memory :meth:`~napari_b2u.denoise.denoiser.Denoiser.denoise` cuts each frame into tiles at
:func:`tile_starts` and keeps, of every tile, the part :func:`keep` says (later tiles win where
two kept parts meet). A block here is a range of frames (a multiple of the batch size, starting
at a multiple of it, so that the network sees the very same batches) times a rectangle made of
whole output chunks; it computes every tile whose kept part meets the rectangle, in the same
order, so each output pixel comes from the same tile as in memory: the results are identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles of a side of ``size`` pixels start (tiles of ``tile`` pixels that overlap
    by ``2 * overlap``; the last one ends at the edge)."""
    if size <= tile:
        return [0]
    step = tile - 2 * overlap
    if step <= 0:
        raise ValueError(f"tile size {tile} must exceed twice the overlap {overlap}")
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return starts


def keep(start: int, tile: int, size: int, overlap: int) -> tuple[int, int]:
    """The part of a tile at ``start`` whose pixels are written to the output."""
    lo = start + (overlap if start > 0 else 0)
    hi = start + tile - (overlap if start + tile < size else 0)
    return lo, hi


def tiles_meeting(lo: int, hi: int, size: int, tile: int, overlap: int) -> list[int]:
    """Starts (in :func:`tile_starts` order) of the tiles whose kept part meets [lo, hi)."""
    t = min(tile, size)
    out = []
    for s in tile_starts(size, tile, overlap):
        k0, k1 = keep(s, t, size, overlap)
        if k0 < hi and k1 > lo:
            out.append(s)
    return out


@dataclass(frozen=True)
class Block:
    """One task: frames [f0, f1) (of the (N, C, Y, X) frames), rows [y0, y1), columns [x0, x1)."""

    index: int
    f0: int
    f1: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def pixels(self) -> int:
        return (self.f1 - self.f0) * (self.y1 - self.y0) * (self.x1 - self.x0)


@dataclass(frozen=True)
class BlockPlan:
    """How a stack of ``n`` frames of ``c`` × ``h`` × ``w`` is cut into :class:`Block` s."""

    n: int
    c: int
    h: int
    w: int
    tile: int
    overlap: int
    batch: int
    frames_per_block: int
    chunk_y: int
    chunk_x: int
    rows_per_block: int  # in chunks
    cols_per_block: int  # in chunks

    @property
    def n_blocks(self) -> int:
        nf = math.ceil(self.n / self.frames_per_block)
        return nf * math.ceil(self.h / (self.chunk_y * self.rows_per_block)) * math.ceil(
            self.w / (self.chunk_x * self.cols_per_block))

    def block(self, index: int) -> Block:
        """Block ``index`` (frames outermost, then rows, then columns)."""
        gy, gx = self.chunk_y * self.rows_per_block, self.chunk_x * self.cols_per_block
        ny, nx = math.ceil(self.h / gy), math.ceil(self.w / gx)
        if not 0 <= index < self.n_blocks:
            raise IndexError(f"block {index} of {self.n_blocks}")
        fi, rest = divmod(index, ny * nx)
        yi, xi = divmod(rest, nx)
        f0, y0, x0 = fi * self.frames_per_block, yi * gy, xi * gx
        return Block(index, f0, min(self.n, f0 + self.frames_per_block), y0,
                     min(self.h, y0 + gy), x0, min(self.w, x0 + gx))

    def blocks(self) -> list[Block]:
        return [self.block(k) for k in range(self.n_blocks)]

    def tiles(self, block: Block) -> tuple[list[int], list[int]]:
        """The tile starts (rows, columns) that ``block`` computes."""
        return (tiles_meeting(block.y0, block.y1, self.h, self.tile, self.overlap),
                tiles_meeting(block.x0, block.x1, self.w, self.tile, self.overlap))

    def read_region(self, block: Block) -> tuple[int, int, int, int]:
        """The input rows [y0, y1) and columns [x0, x1) that ``block``'s tiles cover."""
        ys, xs = self.tiles(block)
        th, tw = min(self.tile, self.h), min(self.tile, self.w)
        return ys[0], ys[-1] + th, xs[0], xs[-1] + tw

    def computed_pixels(self) -> int:
        """Tile pixels the plan computes per channel (≥ the frames' pixels: overlaps, and tiles
        computed by two blocks when frames are split)."""
        th, tw = min(self.tile, self.h), min(self.tile, self.w)
        total = 0
        for b in self.blocks():
            ys, xs = self.tiles(b)
            total += (b.f1 - b.f0) * len(ys) * len(xs) * th * tw
        return total


def plan_blocks(n: int, c: int, h: int, w: int, tile: int, overlap: int, batch: int,
                chunks: tuple[int, int], max_pixels: int, inner_chunk: int = 1) -> BlockPlan:
    """The :class:`BlockPlan` for (n, c, h, w) frames denoised in ``batch`` es of tiles of
    ``tile`` px with ``overlap``, written in output chunks of ``chunks`` (Y, X) px. A block holds
    up to ``max_pixels`` (frames × channels × Y × X; whole frames when they fit, which
    computes no tile twice); ``inner_chunk``: the input's chunk along its innermost frame axis,
    so that a block reads whole input chunks where it can."""
    tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)  # ValueError before any work
    batch = max(1, min(int(batch), n))
    cy, cx = max(1, min(int(chunks[0]), h)), max(1, min(int(chunks[1]), w))
    per_frame = c * h * w
    frames = batch * max(1, math.ceil(max(1, inner_chunk) / batch))
    frames = max(batch, min(frames, (max_pixels // max(per_frame, 1)) // batch * batch))
    frames = min(frames, batch * math.ceil(n / batch))
    ncy, ncx = math.ceil(h / cy), math.ceil(w / cx)
    rows, cols = ncy, ncx
    if frames * per_frame > max_pixels:  # a batch of whole frames is too large: split them
        row_px = frames * c * cy * w
        if row_px <= max_pixels:
            rows = max(1, max_pixels // row_px)
        else:  # squares of chunks: fewer tiles computed twice than thin bands
            side = max(1, math.isqrt(max(1, max_pixels // (frames * c * cy * cx))))
            rows, cols = side, side
    return BlockPlan(n, c, h, w, int(tile), int(overlap), batch, frames, cy, cx, min(rows, ncy),
                     min(cols, ncx))
