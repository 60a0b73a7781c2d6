"""Tiling: the LR image is cut into cores of `tile` x `tile` pixels; each core is run with `margin`
LR pixels of real context on every side (the network's receptive margin, e.g.
model.FRACTAL.receptive_margin; clamped at the image border, where the network's own zero padding
then sees the true border), and only the core's part of the output is kept, so the stitched
result equals the whole-image result up to float rounding. Tiles whose context boxes have the same
shape (all interior tiles, and the border tiles of each side) run together in one batch.

How large the tiles and batches may be: the memory budget (memory.py) over the bytes per LR pixel
of a forward pass (the network's prior, or the one sr.Generator measures); `plan_and_run` decides
and retries smaller after an out-of-memory error, for TensorFlow and the exported engines alike.
"""
import math

import numpy as np

MIN_TILE = 32


def tile_boxes(h, w, tile, margin):
    """Cores of at most `tile` x `tile` LR pixels covering h x w, each with its context box.

    Yields (core, context), both (y0, y1, x0, x1); context = core grown by `margin` on every side,
    clamped to the image.
    """
    for y0 in range(0, h, tile):
        y1 = min(y0 + tile, h)
        for x0 in range(0, w, tile):
            x1 = min(x0 + tile, w)
            yield ((y0, y1, x0, x1),
                   (max(0, y0 - margin), min(h, y1 + margin), max(0, x0 - margin), min(w, x1 + margin)))


def tiled(run, lr, scale, tile, margin, batch=1, progress=None):
    """Stitch the SR of `lr` [H, W, C] from tiles (see tile_boxes); `run` maps a batch of LR boxes
    [N, h, w, C] to their SR [N, sh, sw, C]. Tiles whose context boxes have the same shape run
    together, at most `batch` per call; the order of the calls does not change the result.
    `progress(done, total)`, where given, is called after each call with the tiles done so far."""
    h, w = lr.shape[:2]
    s = scale
    out = np.empty((h * s, w * s, lr.shape[2]), np.float32)
    groups = {}
    for core, ctx in tile_boxes(h, w, tile, margin):
        groups.setdefault((ctx[1] - ctx[0], ctx[3] - ctx[2]), []).append((core, ctx))
    batch = max(1, int(batch or 1))
    total, done = sum(len(boxes) for boxes in groups.values()), 0
    for boxes in groups.values():
        for i in range(0, len(boxes), batch):
            chunk = boxes[i:i + batch]
            parts = run(np.stack([lr[cy0:cy1, cx0:cx1] for _, (cy0, cy1, cx0, cx1) in chunk]))
            for part, ((y0, y1, x0, x1), (cy0, _, cx0, _)) in zip(parts, chunk):
                oy, ox = (y0 - cy0) * s, (x0 - cx0) * s
                out[y0 * s:y1 * s, x0 * s:x1 * s] = part[oy:oy + (y1 - y0) * s, ox:ox + (x1 - x0) * s]
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return out


def super_resolve(run, lr, scale, margin, tile=None, batch=1, progress=None):
    """SR of one LR image, float [H, W, 3] in [0, 1], by `run` (a batch [N, h, w, 3] -> its SR).

    Returns float32 [scale*H, scale*W, 3], unclipped. With `tile`, the image is processed in
    tiles with `margin` LR pixels of context (see the module docstring), up to `batch` same-shaped
    tiles per call; the result equals the whole-image one up to float rounding. `progress`: see tiled.
    """
    lr = np.asarray(lr, np.float32)
    h, w = lr.shape[:2]
    if not tile or (h <= tile and w <= tile):
        return np.asarray(run(np.ascontiguousarray(lr[None])))[0]
    return tiled(lambda x: run(np.ascontiguousarray(x)), lr, scale, tile, margin, batch, progress)


def plan_and_run(net, lr, tile=None, batch=None, out_of_memory=lambda e: isinstance(e, MemoryError)):
    """(SR of `lr`, the tile size it ran in or None: whole), the one planner of every engine: `net`
    (sr.Generator, engines.OnRuntime) gives run(batch), scale, margin, prior (bytes per LR pixel
    before any is measured), memory_budget() and bytes_per_pixel() (measured, once), and may have
    `progress` (see tiled: the web page's progress bar).

    `tile` None: automatic, the whole image where it fits the budget by the prior (nothing is
    measured then), else tiles sized by the measured figure; `batch` None: as many same-shaped
    tiles per call as fit. On an error that `out_of_memory(e)` recognises, it retries with half
    the batch, then with tiles half the size, down to MIN_TILE."""
    h, w = lr.shape[:2]
    budget = per_pixel = None
    if tile is None or batch is None:
        budget = net.memory_budget()
        if tile is None and h * w * net.prior <= budget:
            tile = 0   # fits even by the prior: nothing to measure
        elif tile is None or (tile and max(h, w) > tile):
            per_pixel = net.bytes_per_pixel()
    if tile is None:
        tile = auto_tile(h, w, budget, per_pixel or net.prior, net.margin)
    while True:
        last = tile if tile and max(h, w) > tile else None
        n = batch if batch is not None else (tile_batch(tile, budget, per_pixel or net.prior, net.margin)
                                             if last else 1)
        try:
            return super_resolve(net.run, lr, net.scale, net.margin, tile, batch=n,
                                 progress=getattr(net, 'progress', None)), last
        except Exception as e:
            if not out_of_memory(e):
                raise
            count = -(-h // tile) * -(-w // tile) if last else 1   # tiles of the image: the most one call runs
            if min(n, count) > 1:
                batch = min(n, count) // 2
                continue
            current = tile or max(h, w)
            if current <= MIN_TILE:
                raise
            tile = max(MIN_TILE, current // 2)


def tile_batch(tile, budget, per_pixel, margin, most=16):
    """How many tiles of `tile` LR pixels (plus `margin` of context on every side) one call may run
    under `budget` bytes, at `per_pixel` bytes per LR pixel."""
    side = tile + 2 * margin
    return int(max(1, min(most, budget // (side * side * per_pixel))))


def auto_tile(h, w, budget, per_pixel, margin):
    """Tile size (LR pixels) for an h x w image under a memory `budget` in bytes, at `per_pixel`
    bytes per LR pixel and `margin` LR pixels of context on every side; None: no tiling."""
    if h * w * per_pixel <= budget:
        return None
    side = int(math.sqrt(budget / per_pixel)) - 2 * margin
    return max(MIN_TILE, side)
