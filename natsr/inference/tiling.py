"""Tiling: the LR image is cut into cores of `tile` x `tile` pixels; each core is run with `margin`
LR pixels of real context on every side (the network's receptive margin, e.g.
model.FRACTAL.receptive_margin; clamped at the image border, where the network's own zero padding
then sees the true border), and only the core's part of the output is kept, so the stitched
result equals the whole-image result up to float rounding. Tiles whose context boxes have the same
shape (all interior tiles, and the border tiles of each side) run together in one batch.

How large the tiles and batches may be: the memory budget (memory.py) over the bytes per LR pixel
of a forward pass (the network's prior, or the one sr.Generator measures).
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


def tiled(run, lr, scale, tile, margin, batch=1):
    """Stitch the SR of `lr` [H, W, C] from tiles (see tile_boxes); `run` maps a batch of LR boxes
    [N, h, w, C] to their SR [N, sh, sw, C]. Tiles whose context boxes have the same shape run
    together, at most `batch` per call; the order of the calls does not change the result."""
    h, w = lr.shape[:2]
    s = scale
    out = np.empty((h * s, w * s, lr.shape[2]), np.float32)
    groups = {}
    for core, ctx in tile_boxes(h, w, tile, margin):
        groups.setdefault((ctx[1] - ctx[0], ctx[3] - ctx[2]), []).append((core, ctx))
    batch = max(1, int(batch or 1))
    for boxes in groups.values():
        for i in range(0, len(boxes), batch):
            chunk = boxes[i:i + batch]
            parts = run(np.stack([lr[cy0:cy1, cx0:cx1] for _, (cy0, cy1, cx0, cx1) in chunk]))
            for part, ((y0, y1, x0, x1), (cy0, _, cx0, _)) in zip(parts, chunk):
                oy, ox = (y0 - cy0) * s, (x0 - cx0) * s
                out[y0 * s:y1 * s, x0 * s:x1 * s] = part[oy:oy + (y1 - y0) * s, ox:ox + (x1 - x0) * s]
    return out


def super_resolve(sess, x_ph, y, lr, scale, margin, tile=None, batch=1):
    """Run the generator (`x_ph` -> `y` in `sess`) on one LR image, float [H, W, 3] in [0, 1].

    Returns float32 [scale*H, scale*W, 3], unclipped. With `tile`, the image is processed in
    tiles with `margin` LR pixels of context (see the module docstring), up to `batch` same-shaped
    tiles per session call; the result equals the whole-image one up to float rounding.
    """
    lr = np.asarray(lr, np.float32)
    h, w = lr.shape[:2]
    if not tile or (h <= tile and w <= tile):
        return sess.run(y, {x_ph: lr[None]})[0]
    return tiled(lambda x: sess.run(y, {x_ph: x}), lr, scale, tile, margin, batch)


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
