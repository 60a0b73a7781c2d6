"""Export a NatSR / FRSR generator: a TensorFlow SavedModel (TF2 code, TensorFlow Serving), an ONNX
file, a TFLite file or an OpenVINO IR (--format; the last three need requirements-export.txt).

    python export.py --model FRSR --modelpath Model --out exported/FRSR_x4
    python export.py --model FRSR --format onnx --out exported/FRSR_x4.onnx
    python export.py --checkpoint runs/FRSR_x4_trial0/model-500 --scale 4 --out exported/mine
    python export.py --checkpoint runs/FRSR_x2_trial0/model-500 --scale 2 --arch MYNET --out exported/mynet

Every format takes uint8 [N, H, W, 3] RGB (any N, H, W; one image is `img[None]`) and gives uint8
[N, sH, sW, 3]: the pixels `test.py` writes for an RGB uint8 image (x / 255, the generator, clip to
[0, 1], MATLAB's rounding of x * 255). SavedModel: signature `serving_default`, input `image`,
output `image`; the other formats: input `image`, output `sr_image`. `--io float32`: input `input`
float32 RGB in [0, 1], output `output` float32, not clipped (the generator's own output, what
test.py --engine runs). Loading the SavedModel in plain TF2:

    m = tf.saved_model.load('exported/FRSR_x4')
    sr = m.signatures['serving_default'](image=tf.constant(img[None]))['image'][0].numpy()

TensorFlow Serving: copy the folder to <model_base_path>/<version>/ (e.g. models/frsr/1/) and POST
{"inputs": {"image": [<H x W x 3 nested lists>]}} to /v1/models/frsr:predict. The exports run
the whole image at once (no tiling): mind the memory of large images (about 16 KB per LR pixel at x4 on CPU).
engines.py runs the other formats; convert.py writes them.

Exit status (exits.py): 0 done; 2 bad arguments, checkpoint or a converter not installed (one line
on stderr); 130 / 143 after Ctrl-C / SIGTERM.
"""
import argparse
import os
import shutil
import sys
import tempfile

import checkpoints
import convert
import device
import exits
import sr  # TensorFlow is imported when the graph is built
import tflog
from exits import UsageError

SIGNATURE = convert.SIGNATURE


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Export a NatSR / FRSR generator as a TensorFlow SavedModel, ONNX, '
                                            'TFLite or OpenVINO file (uint8 RGB in, uint8 RGB out, any size).')
    p.add_argument('--model', default='NatSR', choices=tuple(checkpoints.MODEL_SCALES),
                   help='shipped model to export (default NatSR): its checkpoint is found under --modelpath as test.py does')
    p.add_argument('--modelpath', default='Model', help='checkpoint folder (default: Model)')
    p.add_argument('--checkpoint', default=None, metavar='PREFIX',
                   help='export this checkpoint prefix instead (e.g. a training checkpoint); needs --scale')
    p.add_argument('--scale', type=int, default=None,
                   help='scale of --checkpoint (a --model fixes its own)')
    p.add_argument('--arch', default='FRACTAL', metavar='NAME',
                   help='generator architecture of the checkpoint (model.GENERATORS; default: FRACTAL)')
    p.add_argument('--format', default='savedmodel', choices=convert.FORMATS,
                   help='savedmodel (default: a folder), onnx (a .onnx file), tflite (a .tflite file) or openvino '
                        '(an .xml file and its .bin); the last three need requirements-export.txt')
    p.add_argument('--io', default='uint8', choices=tuple(convert.IO_NAMES),
                   help='uint8 (default: uint8 RGB in and out, test.py\'s pixels) or float32 (RGB in [0, 1] in, '
                        'the unclipped network output out: what test.py --engine runs)')
    p.add_argument('--out', required=True, help='folder (savedmodel) or file to write (must not exist, unless --overwrite)')
    p.add_argument('--overwrite', action='store_true', help='replace --out if it exists')
    p.add_argument('--gpu', default=None, help='CUDA_VISIBLE_DEVICES while exporting (default: unchanged)')
    return tflog.add_flag(p).parse_args(argv)


def resolve(args):
    """(checkpoint prefix, scale) from the arguments; UsageError when they conflict or nothing is found."""
    if args.checkpoint:
        if args.scale is None:
            raise UsageError('--checkpoint needs --scale (e.g. 2, 3 or 4)')
        if not os.path.isfile(args.checkpoint + '.index'):
            raise UsageError('%s.index not found' % args.checkpoint)
        return args.checkpoint, args.scale
    scale = checkpoints.MODEL_SCALES[args.model]
    if args.scale is not None and args.scale != scale:
        raise UsageError('--scale %d conflicts with --model %s, which is x%d' % (args.scale, args.model, scale))
    try:
        return checkpoints.find_checkpoint(args.modelpath, args.model), scale
    except checkpoints.CheckpointError as e:
        raise UsageError(str(e))


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


def export(prefix, scale, out_dir, overwrite=False, arch='FRACTAL', fmt='savedmodel', io='uint8'):
    """Write checkpoint `prefix` (generator `arch`, x`scale`) as `fmt` (convert.FORMATS) with `io`
    ends ('uint8' or 'float32', see build_serving_graph) to `out_dir` (a folder for savedmodel,
    else a file; openvino: the .xml, its .bin beside it), atomically: written in a temporary
    folder beside it, renamed at the end. Returns the absolute path."""
    check_targets(out_dir, fmt, overwrite)   # before the work
    try:
        gen = sr.Generator(scale, prefix, arch=arch)   # checks the checkpoint against the x`scale` graph
    except (checkpoints.CheckpointError, ValueError) as e:   # ValueError: an unknown --arch or scale
        raise UsageError(str(e))
    weights = gen.weights()
    gen.close()
    return export_weights(weights, scale, out_dir, overwrite, arch, fmt, io)


def check_targets(out_dir, fmt, overwrite):
    """targets(out_dir, fmt), or UsageError when a converter is missing or a target is taken."""
    if convert.missing(fmt):
        raise UsageError('--format %s needs the package %s (pip install -r requirements-export.txt)'
                         % (fmt, convert.missing(fmt)))
    paths = targets(out_dir, fmt)
    if fmt == 'openvino' and not paths[0].endswith('.xml'):
        raise UsageError('--out of --format openvino must end in .xml (its weights go to the .bin beside it)')
    taken = [p for p in paths if os.path.exists(p)]
    if taken and not overwrite:
        raise UsageError('%s exists (pass --overwrite to replace it)' % taken[0])
    return paths


def export_weights(weights, scale, out_dir, overwrite=False, arch='FRACTAL', fmt='savedmodel', io='uint8'):
    """export() of the generator's `weights` ({name: array}, as sr.Generator.weights gives them)."""
    import tensorflow.compat.v1 as tf
    paths = check_targets(out_dir, fmt, overwrite)
    parent = os.path.dirname(paths[0])
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.export-', dir=parent)
    try:
        with tf.Graph().as_default() as graph:
            inp, out = build_serving_graph(weights, scale, arch, io, portable=fmt != 'savedmodel')
            with tf.Session(graph=graph, config=device.session_config()) as sess:
                written = convert.write(fmt, sess, inp, out, io, tmp)
        for src, dst in reversed(list(zip(written, paths))):   # the .xml last: it names its .bin
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            os.replace(src, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths[0]


def main(argv=None):
    args = parse_args(argv)
    tflog.init(args.verbose, graph=False)   # the serving graph is built in its own tf.Graph()
    device.select_gpu(args.gpu)
    return exits.main(lambda: run(args))


def run(args):
    prefix, scale = resolve(args)
    out = export(prefix, scale, args.out, args.overwrite, args.arch, args.format, args.io)
    print('exported %s (x%d) -> %s' % (prefix, scale, out))
    ends = ('image', 'image') if args.format == 'savedmodel' and args.io == 'uint8' else convert.IO_NAMES[args.io]
    print("%s: %s %s [N, H, W, 3] -> %s %s [N, %dH, %dW, 3]" % (
        "signature '%s'" % SIGNATURE if args.format == 'savedmodel' else args.format,
        ends[0], args.io, ends[1], args.io, scale, scale))


if __name__ == '__main__':
    sys.exit(main())
