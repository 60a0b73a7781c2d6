"""The computations whose last bits depend on the CPU's convolution kernels, and how close their
results must be; run in this process by the tests, and in a child process under another kernel
choice (`python tests/cpu_kernels.py OUT.npz`, with a VARIANTS environment) so that one machine
checks what another CPU would run.

Which kernels run: TensorFlow's oneDNN ops (TF_ENABLE_ONEDNN_OPTS; TensorFlow turns them on by
default only on CPUs with AVX512_VNNI / AVX512_BF16 / AVX_VNNI / AMX, test.py always) or Eigen's
convolution, whose matrix products call oneDNN's sgemm; both pick their code by the CPU's ISA,
which ONEDNN_MAX_CPU_ISA caps (AVX2: the kernels of an AVX2-only CPU).
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# environment of a child process -> the kernels of another CPU (set before TensorFlow starts)
VARIANTS = {
    'onednn-avx2': {'TF_ENABLE_ONEDNN_OPTS': '1', 'ONEDNN_MAX_CPU_ISA': 'AVX2'},
    'eigen-avx2': {'TF_ENABLE_ONEDNN_OPTS': '0', 'ONEDNN_MAX_CPU_ISA': 'AVX2'},
    'onednn-native': {'TF_ENABLE_ONEDNN_OPTS': '1', 'ONEDNN_MAX_CPU_ISA': 'ALL'},
    'eigen-native': {'TF_ENABLE_ONEDNN_OPTS': '0', 'ONEDNN_MAX_CPU_ISA': 'ALL'},
}

# The last stage in row strips against one piece, in the same process, as a fraction of the
# output's largest magnitude (at least 1): 0 with oneDNN's convolutions; float rounding with
# Eigen's on AVX2 (its sgemm rounds a row by its place in the block), well under this bound.
STRIP_RTOL = 2e-6
# The same network under two kernel choices (e.g. test.py's oneDNN against Eigen), same fraction.
KERNEL_RTOL = 1e-5
# ... and its 16-bit output, in uint16 levels (a path through 8 bits would differ by up to 128)
DEEP_LEVELS = 8
STRIP_ROWS = (1, 3, 7, 40)          # strip heights of the small stage (13 rows)
GEN_STRIP_ROWS = (7, 64)            # strip heights of the generators (64: sr.STRIP_ROWS)
CHILD_SCALES = (4,)                 # the last stage at 2x (x2 and x3 run it at 1x: checked in-process)
LR_SHAPE = (67, 17)                 # a height no multiple of the strip heights; 2 strips of 64 at x2


def rel_diff(got, want):
    """Largest |got - want| over the largest |want| (at least 1)."""
    return float(np.abs(np.asarray(got, np.float64) - want).max() / max(1.0, np.abs(want).max()))


def strips_exact():
    """Whether strips must equal one piece bit for bit in this process: with oneDNN's ops."""
    sys.path.insert(0, ROOT)
    from natsr import device
    return device.onednn_enabled()


def assert_strips_match(got, want, what):
    """Strips against one piece: bit for bit with oneDNN's ops, else within STRIP_RTOL."""
    if strips_exact():
        assert np.array_equal(got, want), (what, rel_diff(got, want))
    else:
        assert rel_diff(got, want) <= STRIP_RTOL, (what, rel_diff(got, want))


def stage_outputs(halo=2):
    """A convolution -> depth_to_space -> convolution stage on a batch of 2 13 x 9 images, in one
    piece and in model.in_row_strips of each of STRIP_ROWS rows with `halo` rows of context:
    (one piece, [strips...])."""
    import tensorflow.compat.v1 as tf
    import model
    rng = np.random.RandomState(0)
    k1, k2 = rng.randn(3, 3, 4, 16).astype(np.float32), rng.randn(3, 3, 4, 3).astype(np.float32)

    def stage(t):
        t = tf.depth_to_space(tf.nn.conv2d(t, tf.constant(k1), [1, 1, 1, 1], 'SAME'), 2)
        return tf.nn.conv2d(t, tf.constant(k2), [1, 1, 1, 1], 'SAME')
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, None, None, 4])
        whole = stage(x)
        strips = [model.in_row_strips(x, stage, 2, rows, halo=halo) for rows in STRIP_ROWS]
        with tf.Session() as sess:
            feed = {x: rng.rand(2, 13, 9, 4).astype(np.float32)}
            return sess.run(whole, feed), sess.run(strips, feed)


def generator_outputs(scale, prefix=None, lr=None, rows=GEN_STRIP_ROWS, halo=None):
    """sr.Generator x`scale` (checkpoint `prefix`, else random weights of seed `scale`) on `lr`
    (default: a random LR_SHAPE image), in one piece and
    with its last stage in strips of each of `rows` rows (`halo`: context rows of the strips,
    default model.in_row_strips's): (one piece, [strips...])."""
    import model
    from natsr.inference import sr
    if lr is None:
        lr = np.random.RandomState(scale).rand(LR_SHAPE[0], LR_SHAPE[1], 3).astype(np.float32)
    seed = None if prefix else scale
    one = sr.Generator(scale, prefix, seed=seed, strip_rows=0)
    try:
        want = one(lr, tile=0)
    finally:
        one.close()
    real = model.in_row_strips
    if halo is not None:
        model.in_row_strips = lambda *a, **k: real(*a, **dict(k, halo=halo))
    try:
        got = []
        for n in rows:
            gen = sr.Generator(scale, prefix, seed=seed, strip_rows=n)
            try:
                got.append(gen(lr, tile=0))
            finally:
                gen.close()
    finally:
        model.in_row_strips = real
    return want, got


def deep_image():
    """A random 16-bit 9 x 11 RGB image."""
    return np.random.RandomState(3).randint(0, 65536, (9, 11, 3)).astype(np.uint16)


def deep_output(img=None):
    """The 16-bit path of test.py with a random x2 generator (seed 7): uint16 -> float in [0, 1]
    -> network (fp32) -> clipped -> rounded to uint16."""
    from natsr.inference import sr
    import utils
    gen = sr.Generator(2, seed=7)
    try:
        out = gen(utils.to_float(deep_image() if img is None else img), tile=0)
    finally:
        gen.close()
    return utils.to_uint(np.clip(out, 0, 1), np.uint16)


def deep_close(got, want):
    """Two 16-bit outputs of one network under two kernel choices: within DEEP_LEVELS levels."""
    return got.shape == want.shape and np.abs(got.astype(np.int64) - want).max() <= DEEP_LEVELS


def assert_same_kernels_result(got, want, what):
    """One computation under two kernel choices: float within KERNEL_RTOL, uint16 deep_close."""
    assert got.shape == want.shape, what
    if got.dtype == np.uint16:
        assert deep_close(got, want), (what, np.abs(got.astype(np.int64) - want).max())
    else:
        assert rel_diff(got, want) <= KERNEL_RTOL, (what, rel_diff(got, want))


def reference_results():
    """The one-piece results that child_results returns too, computed here: {name: array}."""
    res = {'stage': stage_outputs()[0], 'deep': deep_output()}
    for scale in CHILD_SCALES:
        res['x%d' % scale] = generator_outputs(scale, rows=())[0]
    return res


def child_results():
    """reference_results, with every strip height of the stage and the generators checked
    against one piece here (assert_strips_match)."""
    want, got = stage_outputs()
    for rows, g in zip(STRIP_ROWS, got):
        assert_strips_match(g, want, ('stage', rows))
    res = {'stage': want, 'deep': deep_output()}
    for scale in CHILD_SCALES:
        want, got = generator_outputs(scale)
        for rows, g in zip(GEN_STRIP_ROWS, got):
            assert_strips_match(g, want, ('generator', scale, rows))
        res['x%d' % scale] = want
    return res


def variant_adds_nothing(name):
    """Whether VARIANTS[`name`] runs the kernels this process runs (same oneDNN-ops state, same
    ISA), or those of another variant: a cap at AVX2 changes nothing on a CPU without AVX-512, so
    there the '-native' variants repeat the '-avx2' ones."""
    from natsr import device
    env = VARIANTS[name]
    no_avx512 = 'avx512f' not in device.cpu_flags()
    if no_avx512 and name.endswith('-native'):
        return True
    if (env['TF_ENABLE_ONEDNN_OPTS'] == '1') != device.onednn_enabled():
        return False
    mine, theirs = os.environ.get('ONEDNN_MAX_CPU_ISA', 'ALL').upper(), env['ONEDNN_MAX_CPU_ISA']
    return mine == theirs or (no_avx512 and {mine, theirs} <= {'ALL', 'AVX2'})


def main(out):
    sys.path.insert(0, ROOT)
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from natsr.process import tflog
    tflog.init()
    from natsr import device
    res = child_results()
    res['onednn'] = np.array(device.onednn_enabled())
    np.savez(out, **res)


if __name__ == '__main__':
    main(sys.argv[1])
