"""Tiled super-resolution equals whole-image super-resolution (random weights, small images)."""
import numpy as np
import pytest

import sr


def smooth_image(h, w, seed=0):
    """A natural-ish float image in [0, 1]: random noise plus a smooth gradient."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w] / float(max(h, w))
    base = np.stack([yy, xx, 0.5 * (yy + xx)], axis=2)
    return np.clip(0.7 * base + 0.3 * rng.rand(h, w, 3), 0, 1).astype(np.float32)


def test_tile_boxes_cover_every_pixel_once():
    h, w, tile, margin = 101, 67, 40, 46
    count = np.zeros((h, w), int)
    boxes = list(sr.tile_boxes(h, w, tile, margin))
    assert len(boxes) == 3 * 2
    for (y0, y1, x0, x1), (cy0, cy1, cx0, cx1) in boxes:
        count[y0:y1, x0:x1] += 1
        assert y1 - y0 <= tile and x1 - x0 <= tile
        # the context is the core grown by the margin, clamped to the image
        assert (cy0, cy1, cx0, cx1) == (max(0, y0 - margin), min(h, y1 + margin),
                                        max(0, x0 - margin), min(w, x1 + margin))
    assert (count == 1).all()


def test_auto_tile():
    per_px = sr.BYTES_PER_LR_PIXEL[4]
    assert sr.auto_tile(100, 100, 4, budget=100 * 100 * per_px) is None
    tile = sr.auto_tile(1000, 800, 4, budget=300 * 300 * per_px)
    assert tile == 300 - 2 * sr.RECEPTIVE_MARGIN
    assert sr.auto_tile(1000, 800, 4, budget=10) == sr.MIN_TILE


@pytest.fixture(scope='module')
def generators():
    """Random-weight generators by scale, built on first use."""
    gens = {}

    def get(scale):
        if scale not in gens:
            gens[scale] = sr.Generator(scale, seed=scale)
        return gens[scale]
    yield get
    for gen in gens.values():
        gen.close()


def run(gen, lr, **kw):
    return sr.super_resolve(gen.sess, gen.input, gen.output, lr, gen.scale, **kw)


def test_tiled_equals_whole_x4(generators):
    gen = generators(4)
    # 99 x 67, tiles of 50 (neither side a multiple): 2 x 2 tiles whose contexts are cut by the
    # margin inside the image (rows 0..96 and 4..99, columns 4..67), so the margin is what matters
    lr = smooth_image(99, 67)
    boxes = [ctx for _, ctx in sr.tile_boxes(99, 67, 50)]
    assert len(boxes) == 4 and {ctx[1] for ctx in boxes} == {96, 99} and {ctx[2] for ctx in boxes} == {0, 4}
    whole = run(gen, lr)
    assert whole.shape == (99 * 4, 67 * 4, 3) and whole.std() > 1e-3
    tiled = run(gen, lr, tile=50)
    assert np.abs(tiled - whole).max() < 1e-4
    # the check has teeth: with too little context the seams show
    short = run(gen, lr, tile=50, margin=2)
    assert np.abs(short - whole).max() > 1e-4


def test_tiled_equals_whole_x3(generators):
    gen = generators(3)
    lr = smooth_image(37, 29, seed=2)   # 3 x 2 tiles of at most 16: the stitching offsets at x3
    whole = run(gen, lr)
    assert whole.shape == (37 * 3, 29 * 3, 3)
    assert np.abs(run(gen, lr, tile=16) - whole).max() < 1e-4


def test_automatic_tiling_when_memory_is_short(generators, monkeypatch):
    gen = generators(4)
    lr = smooth_image(60, 30, seed=1)
    whole = gen(lr, tile=0)
    calls = []
    real = sr.super_resolve
    monkeypatch.setattr(gen, 'memory_budget', lambda: 1)  # nothing fits: the smallest tiles
    monkeypatch.setattr(sr, 'super_resolve', lambda *a, **k: calls.append(a[5]) or real(*a, **k))
    auto = gen(lr)
    assert calls == [sr.MIN_TILE]
    assert np.abs(auto - whole).max() < 1e-4
