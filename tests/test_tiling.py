"""Tiled super-resolution equals whole-image super-resolution (random weights, small images); the
tiling follows the memory measured here; the last stage in row strips changes no bit."""
import os
import subprocess
import sys

import numpy as np
import pytest

import cpu_kernels
from natsr.inference import sr
from natsr.inference import tiling
from conftest import ROOT
from model import FRACTAL

MARGIN = FRACTAL.receptive_margin
PRIOR = FRACTAL.bytes_per_lr_pixel


def smooth_image(h, w, seed=0):
    """A natural-ish float image in [0, 1]: random noise plus a smooth gradient."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w] / float(max(h, w))
    base = np.stack([yy, xx, 0.5 * (yy + xx)], axis=2)
    return np.clip(0.7 * base + 0.3 * rng.rand(h, w, 3), 0, 1).astype(np.float32)


def test_tile_boxes_cover_every_pixel_once():
    h, w, tile, margin = 101, 67, 40, 46
    count = np.zeros((h, w), int)
    boxes = list(tiling.tile_boxes(h, w, tile, margin))
    assert len(boxes) == 3 * 2
    for (y0, y1, x0, x1), (cy0, cy1, cx0, cx1) in boxes:
        count[y0:y1, x0:x1] += 1
        assert y1 - y0 <= tile and x1 - x0 <= tile
        # the context is the core grown by the margin, clamped to the image
        assert (cy0, cy1, cx0, cx1) == (max(0, y0 - margin), min(h, y1 + margin),
                                        max(0, x0 - margin), min(w, x1 + margin))
    assert (count == 1).all()


def test_auto_tile():
    per_px = PRIOR[4]
    assert tiling.auto_tile(100, 100, 100 * 100 * per_px, per_px, MARGIN) is None
    tile = tiling.auto_tile(1000, 800, 300 * 300 * per_px, per_px, MARGIN)
    assert tile == 300 - 2 * MARGIN
    assert tiling.auto_tile(1000, 800, 10, per_px, MARGIN) == tiling.MIN_TILE
    # a smaller figure (measured on this machine) fits more
    measured = per_px // 4
    assert tiling.auto_tile(1000, 800, 1000 * 800 * measured, measured, MARGIN) is None
    assert tiling.auto_tile(1000, 800, 300 * 300 * measured, measured, MARGIN) == 300 - 2 * MARGIN
    side = 100 + 2 * MARGIN
    assert tiling.tile_batch(100, side * side * measured * 5, measured, MARGIN) == 5


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
    kw.setdefault('margin', gen.margin)
    return tiling.super_resolve(gen.run, lr, gen.scale, **kw)


def test_tiled_equals_whole_x4(generators):
    gen = generators(4)
    # 99 x 67, tiles of 50 (neither side a multiple): 2 x 2 tiles whose contexts are cut by the
    # margin inside the image (rows 0..96 and 4..99, columns 4..67), so the margin is what matters
    lr = smooth_image(99, 67)
    boxes = [ctx for _, ctx in tiling.tile_boxes(99, 67, 50, MARGIN)]
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
    real = tiling.super_resolve
    monkeypatch.setattr(gen, 'memory_budget', lambda: 1)  # nothing fits: the smallest tiles
    monkeypatch.setattr(tiling, 'super_resolve', lambda *a, **k: calls.append(a[4]) or real(*a, **k))
    auto = gen(lr)
    assert calls == [tiling.MIN_TILE]
    assert np.abs(auto - whole).max() < 1e-4


def test_tiling_follows_the_measured_memory(generators, monkeypatch):
    """The prior decides only where it fits the whole image (nothing is measured then); otherwise
    the tile size and batch come from the figure measured on this machine."""
    gen = generators(4)
    lr = smooth_image(60, 30, seed=1)
    prior = PRIOR[4]
    calls = []
    real = tiling.super_resolve
    monkeypatch.setattr(tiling, 'super_resolve', lambda *a, **k: calls.append((a[4], k['batch'])) or real(*a, **k))
    monkeypatch.setattr(gen, 'bytes_per_pixel', lambda: pytest.fail('measured although the prior fits'))
    monkeypatch.setattr(gen, 'memory_budget', lambda: 60 * 30 * prior)
    whole = gen(lr)
    assert gen.last_tile is None and calls == [(0, 1)]
    # the prior does not fit, the measured figure (a quarter of it) does: the whole image, in one pass
    measured = prior // 4
    monkeypatch.setattr(gen, 'bytes_per_pixel', lambda: measured)
    monkeypatch.setattr(gen, 'memory_budget', lambda: 60 * 30 * prior // 2)
    calls.clear()
    assert np.array_equal(gen(lr), whole) and gen.last_tile is None and calls == [(None, 1)]
    # a larger image that neither fits (the network stubbed: the decision is what is tested here):
    # tiles sized by the measured figure, 208 (the prior would give 58)
    big = np.zeros((1000, 800, 3), np.float32)
    monkeypatch.setattr(tiling, 'super_resolve', lambda *a, **k: calls.append((a[4], k['batch'])))
    budget = 300 * 300 * measured
    monkeypatch.setattr(gen, 'memory_budget', lambda: budget)
    calls.clear()
    gen(big)
    assert tiling.auto_tile(1000, 800, budget, prior, MARGIN) == 150 - 2 * MARGIN
    assert gen.last_tile == 300 - 2 * MARGIN and calls == [(gen.last_tile, 1)]
    # --tile 100: as many tiles per call as the measured figure allows (2; the prior: 1)
    calls.clear()
    gen(big, tile=100)
    assert tiling.tile_batch(100, budget, prior, MARGIN) == 1 and calls == [(100, 300 * 300 // (100 + 2 * MARGIN) ** 2)]


def test_memory_per_pixel_is_measured(monkeypatch):
    """bytes_per_pixel measures a pass here: with TensorFlow's allocator statistics (oneDNN's
    allocator) it sees that the last stage in strips needs less than in one piece."""
    monkeypatch.setattr(sr, 'PROBE_SIDE', 48)
    one, strips = sr.Generator(4, seed=1, strip_rows=0), sr.Generator(4, seed=1, strip_rows=16)
    a, b = one.bytes_per_pixel(), strips.bytes_per_pixel()
    if one.per_pixel_source != 'allocator':
        pytest.skip('no allocator statistics here (oneDNN ops off): the resident memory only raises the prior')
    assert strips.per_pixel_source == 'allocator'
    assert 1024 < b < 0.75 * a and b < PRIOR[4]
    assert strips.bytes_per_pixel() == b        # measured once
    one.close()
    strips.close()


# ---------------------------------------------------------------- the last stage in row strips

def test_row_strips_equal_one_piece():
    """model.in_row_strips on a convolution -> depth_to_space -> convolution stage: the same values
    as in one piece for any strip height (batch of 2, odd sizes), bit for bit with oneDNN's ops,
    within float rounding with Eigen's convolution (cpu_kernels.assert_strips_match); with 1 row
    of context instead of 2 the seams show, far beyond that rounding."""
    want, got = cpu_kernels.stage_outputs()
    assert want.shape == (2, 26, 18, 3)
    for rows, g in zip(cpu_kernels.STRIP_ROWS, got):
        cpu_kernels.assert_strips_match(g, want, rows)
    _, short = cpu_kernels.stage_outputs(halo=1)
    for rows, g in zip(cpu_kernels.STRIP_ROWS, short):
        if rows < want.shape[1] // 2:            # more than one strip: seams
            assert cpu_kernels.rel_diff(g, want) > 1e4 * cpu_kernels.STRIP_RTOL, rows
            with pytest.raises(AssertionError):
                cpu_kernels.assert_strips_match(g, want, rows)


def _strips_against_one_piece(scale, prefix, lr=None, halo=None):
    """The Generator's output with its last stage in strips (cpu_kernels.GEN_STRIP_ROWS) and in one
    piece: float (unclipped) per assert_strips_match; uint8 (what test.py writes) equal, or within
    1 level on a few pixels where float rounding is allowed."""
    import utils
    want, got = cpu_kernels.generator_outputs(scale, prefix, lr, halo=halo)
    h, w = cpu_kernels.LR_SHAPE if lr is None else lr.shape[:2]
    assert want.shape == (h * scale, w * scale, 3)
    for rows, g in zip(cpu_kernels.GEN_STRIP_ROWS, got):
        cpu_kernels.assert_strips_match(g, want, (scale, rows))
        a, b = (utils.to_uint(np.clip(v, 0, 1)).astype(int) for v in (g, want))
        if cpu_kernels.strips_exact():
            assert np.array_equal(a, b)
        else:
            assert np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-4
    return want, got


@pytest.mark.parametrize('name', ['FRSR', 'NatSR'])
def test_generator_strips_change_no_bit_shipped(name):
    """The shipped x4 models (last stage at 2x, 96 rows there: 14 strips of 7, 2 of 64)."""
    import skimage.data
    prefix = os.path.join(ROOT, 'Model', name)
    if not os.path.exists(prefix + '.index'):
        pytest.skip('shipped model %s absent' % prefix)
    lr = skimage.data.astronaut()[100:148, 180:216].astype(np.float32) / 255   # 48 x 36 LR
    _strips_against_one_piece(4, prefix, lr)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_generator_strips_change_no_bit_random(scale, tmp_path):
    """A random checkpoint (saved, then loaded as a user's would be) on a random image whose height
    is no multiple of the strip height; x2 and x3 run their last stage at 1x, x4 at 2x."""
    gen = sr.Generator(scale, seed=scale)
    prefix = gen.save(str(tmp_path / 'GEN'))
    gen.close()
    _strips_against_one_piece(scale, prefix)


def test_generator_strips_one_context_row_short_fail():
    """The check has teeth: strips with 1 row of context (the stage needs 2) miss it by far."""
    lr = np.random.RandomState(0).rand(30, 17, 3).astype(np.float32)
    want, got = cpu_kernels.generator_outputs(2, lr=lr, rows=(7,), halo=1)
    for rows, g in zip((7,), got):
        assert cpu_kernels.rel_diff(g, want) > 1e4 * cpu_kernels.STRIP_RTOL, rows
        with pytest.raises(AssertionError):
            cpu_kernels.assert_strips_match(g, want, rows)


@pytest.fixture(scope='module')
def here():
    """This process's one-piece results of cpu_kernels, computed once."""
    return cpu_kernels.reference_results()


@pytest.mark.slow
@pytest.mark.parametrize('variant', sorted(cpu_kernels.VARIANTS))
def test_other_cpu_kernels(variant, here, tmp_path):
    """The strips and the 16-bit path under the kernels another CPU runs (cpu_kernels.VARIANTS:
    oneDNN's ops or Eigen's convolution, at this CPU's ISA or capped at AVX2), in a child process:
    the strips hold there, and its results agree with this process's within float rounding."""
    if cpu_kernels.variant_adds_nothing(variant):
        pytest.skip('the kernels of this process (the tests above) or of another variant')
    out = str(tmp_path / 'res.npz')
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', **cpu_kernels.VARIANTS[variant])
    res = subprocess.run([sys.executable, cpu_kernels.__file__, out], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    theirs = np.load(out)
    assert bool(theirs['onednn']) == (env['TF_ENABLE_ONEDNN_OPTS'] == '1')
    for key, mine in here.items():
        cpu_kernels.assert_same_kernels_result(theirs[key], mine, (variant, key))


def test_deep_tolerance_has_teeth():
    """A 16-bit output that went through 8 bits fails deep_close; one level off passes."""
    import utils
    deep = cpu_kernels.deep_output()
    assert deep.std() > 1000
    assert cpu_kernels.deep_close(np.clip(deep.astype(np.int64) + 1, 0, 65535).astype(np.uint16), deep)
    through8 = utils.to_uint(utils.to_float(utils.to_uint(utils.to_float(deep))), np.uint16)
    assert not cpu_kernels.deep_close(through8, deep)


class _Short(object):
    """A network (identity upscaling by pixel repetition) whose passes fail with `error` on more than
    `most` LR pixels per call, as one that runs out of memory: what tiling.plan_and_run drives."""
    scale, margin, prior = 2, 4, 1000

    def __init__(self, most, error):
        self.most, self.error, self.calls = most, error, []

    def memory_budget(self):
        return 10 ** 12      # the plan says: whole

    def bytes_per_pixel(self):
        return self.prior

    def run(self, batch):
        self.calls.append(batch.shape)
        if batch.shape[0] * batch.shape[1] * batch.shape[2] > self.most:
            raise self.error
        return batch.repeat(2, axis=1).repeat(2, axis=2)


@pytest.mark.parametrize('error', [MemoryError(), RuntimeError('std::bad_alloc')])
def test_out_of_memory_retries_in_smaller_tiles(error):
    """The one planner of TensorFlow's path and the engines': after an out-of-memory error, tiles
    half the batch, then half the size, until one fits, with the same result; any other error is
    raised at once."""
    from natsr.deploy import engines
    lr = smooth_image(100, 90, seed=3)
    net = _Short(40 * 40, error)
    out, last = tiling.plan_and_run(net, lr, out_of_memory=engines.out_of_memory)
    assert np.array_equal(out, lr.repeat(2, axis=0).repeat(2, axis=1))
    assert net.calls[0] == (1, 100, 90, 3)                          # whole first: the plan said it fits
    assert [s[0] for s in net.calls[1:4]] == [2, 2, 1]    # tiles of 50 (two of each shape): two a call, then one
    assert last == tiling.MIN_TILE and net.calls[-1][1] <= tiling.MIN_TILE + 2 * net.margin   # then 32: fits
    with pytest.raises(ValueError):
        tiling.plan_and_run(_Short(40 * 40, ValueError('a real bug')), lr, out_of_memory=engines.out_of_memory)
    tiny = _Short(1, error)    # nothing fits: the smallest tiles fail too, and the error comes through
    with pytest.raises(type(error)):
        tiling.plan_and_run(tiny, lr, out_of_memory=engines.out_of_memory)
    assert min(s[1] for s in tiny.calls) <= tiling.MIN_TILE + 2 * tiny.margin
