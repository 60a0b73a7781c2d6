"""The serving graph of a generator and its export (export.py's work, engines.py's temporary exports):
`build_serving_graph` (the generator with its weights frozen, uint8 or float32 ends), `export` /
`export_weights` (a checkpoint or given weights written by convert.py in a format, atomically).
TensorFlow is imported when a graph is built."""
import os
import shutil

import utils
from natsr import checkpoints
from natsr import device
from natsr.deploy import convert
from natsr.inference import sr
from natsr.process.exits import UsageError

SIGNATURE = convert.SIGNATURE


def uint8_thresholds():
    """float32 [257]: entry k (1..255) is the smallest float32 y with y * 255 >= k - 0.5 exactly (float64
    holds the product of a float32 and 255 exactly); entry 0 is -inf, entry 256 +inf."""
    import numpy as np
    k = np.arange(1, 256)
    c = ((k - 0.5) / 255).astype(np.float32)
    c = np.where(c.astype(np.float64) * 255 >= k - 0.5, c, np.nextafter(c, np.float32(2)))
    return np.concatenate([[-np.inf], c, [np.inf]]).astype(np.float32)


def round_to_uint8(y):
    """uint8 of float32 `y` in [0, 1]: floor(y * 255 + 0.5) as in float64 (utils.to_uint), computed in
    float32: the float32 estimate is at most 1 off, and two exact comparisons with uint8_thresholds
    correct it (float64 ops would need TFLite's SELECT_TF_OPS)."""
    import tensorflow.compat.v1 as tf
    table = tf.constant(uint8_thresholds(), name='uint8_thresholds')
    k = tf.clip_by_value(tf.floor(y * 255.0 + 0.5), 0.0, 255.0)
    index = tf.cast(k, tf.int32)
    up = tf.cast(tf.greater_equal(y, tf.gather(table, index + 1)), tf.float32)
    down = tf.cast(tf.less(y, tf.gather(table, index)), tf.float32)
    return tf.cast(k + up - down, tf.uint8, name='sr_image')


def build_serving_graph(weights, scale, arch='FRACTAL', io='uint8', portable=False):
    """(input [N, H, W, 3], output [N, sH, sW, 3]) in the default graph: the generator `arch` with
    its `weights` ({name: array}) frozen as constants, as in sr.Generator (oneDNN's fast convolutions
    where TensorFlow runs oneDNN ops).

    io 'uint8': input `image` uint8 RGB, output `sr_image` uint8 with test.py's conversions: float32
    x / 255 in, clip(y, 0, 1) rounded as MATLAB does (round_to_uint8) out. io 'float32': input
    `input` float32 RGB in [0, 1], output `output` float32, not clipped (sr.Generator's graph).
    `portable`: x / 255 by a constant (for the converters), instead of a divisor Grappler cannot
    fold into conv1's kernel (which would change TensorFlow's pixels)."""
    import tensorflow.compat.v1 as tf
    import model
    if io == 'float32':
        x = tf.placeholder(tf.float32, [None, None, None, 3], name='input')
        image = x
    else:
        image = tf.placeholder(tf.uint8, [None, None, None, 3], name='image')
        divisor = tf.constant(255.0) if portable else tf.placeholder_with_default(255.0, [], name='range')
        x = tf.cast(image, tf.float32) / divisor
    with tf.variable_scope(tf.get_variable_scope(), custom_getter=sr.constant_getter(weights)):
        y = model.generator(arch, x, scale).output
    if io == 'float32':
        return image, tf.identity(y, name='output')
    return image, round_to_uint8(tf.clip_by_value(y, 0.0, 1.0))


def targets(out, fmt):
    """The paths `out` stands for in `fmt`: the folder or file itself, and for openvino its .bin too."""
    out = os.path.abspath(out)
    return [out, os.path.splitext(out)[0] + '.bin'] if fmt == 'openvino' else [out]


def export(prefix, scale, out_dir, overwrite=False, arch='FRACTAL', fmt='savedmodel', io='uint8', calibration=None):
    """Write checkpoint `prefix` (generator `arch`, x`scale`) as `fmt` (convert.FORMATS) with `io`
    ends ('uint8' or 'float32', see build_serving_graph) to `out_dir` (a folder for savedmodel,
    else a file; openvino: the .xml, its .bin beside it), atomically: written in a temporary
    folder beside it, renamed at the end. `calibration`: LR patches for an int8 model (convert.write).
    Returns the absolute path."""
    check_targets(out_dir, fmt, overwrite)   # before the work
    try:
        gen = sr.Generator(scale, prefix, arch=arch)   # checks the checkpoint against the x`scale` graph
    except (checkpoints.CheckpointError, ValueError) as e:   # ValueError: an unknown --arch or scale
        raise UsageError(str(e))
    weights = gen.weights()
    gen.close()
    return export_weights(weights, scale, out_dir, overwrite, arch, fmt, io, calibration)


def check_targets(out_dir, fmt, overwrite):
    """targets(out_dir, fmt), or UsageError when a converter is missing or a target is taken."""
    paths = targets(out_dir, fmt)
    if fmt == 'openvino' and not paths[0].endswith('.xml'):
        raise UsageError('--out of --format openvino must end in .xml (its weights go to the .bin beside it)')
    if convert.missing(fmt):
        raise UsageError('--format %s needs the package %s (pip install -r requirements/export.txt)'
                         % (fmt, convert.missing(fmt)))
    taken = [p for p in paths if os.path.exists(p)]
    if taken and not overwrite:
        raise UsageError('%s exists (pass --overwrite to replace it)' % taken[0])
    return paths


def export_weights(weights, scale, out_dir, overwrite=False, arch='FRACTAL', fmt='savedmodel', io='uint8',
                   calibration=None):
    """export() of the generator's `weights` ({name: array}, as sr.Generator.weights gives them)."""
    import tensorflow.compat.v1 as tf
    paths = check_targets(out_dir, fmt, overwrite)
    utils.remove_leftovers({os.path.dirname(paths[0])})   # the work folders of killed exports
    tmp = utils.temporary_folder(paths[0])
    try:
        with tf.Graph().as_default() as graph:
            inp, out = build_serving_graph(weights, scale, arch, io, portable=fmt != 'savedmodel')
            with tf.Session(graph=graph, config=device.session_config()) as sess:
                written = convert.write(fmt, sess, inp, out, io, tmp, calibration)
        for src, dst in reversed(list(zip(written, paths))):   # the .xml last: it names its .bin
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            os.replace(src, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths[0]
