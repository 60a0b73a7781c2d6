"""Export a NatSR / FRSR generator as a TensorFlow SavedModel (for TF2 code and TensorFlow Serving).

    python export.py --model FRSR --modelpath Model --out exported/FRSR_x4
    python export.py --checkpoint runs/FRSR_x4_trial0/model-500 --scale 4 --out exported/mine
    python export.py --checkpoint runs/FRSR_x2_trial0/model-500 --scale 2 --arch MYNET --out exported/mynet

Signature `serving_default`: input `image`, uint8 [N, H, W, 3] RGB (any N, H, W; one image is
`img[None]`), output `image`, uint8 [N, sH, sW, 3]. The pixels are those `test.py` writes for an
RGB uint8 image: x / 255, the generator, clip to [0, 1], round(x * 255). Loading, in plain TF2:

    m = tf.saved_model.load('exported/FRSR_x4')
    sr = m.signatures['serving_default'](image=tf.constant(img[None]))['image'][0].numpy()

TensorFlow Serving: copy the folder to <model_base_path>/<version>/ (e.g. models/frsr/1/) and POST
{"inputs": {"image": [<H x W x 3 nested lists>]}} to /v1/models/frsr:predict. The SavedModel runs
the whole image at once (no tiling): mind the memory of large images (about 16 KB per LR pixel at x4 on CPU).

Exit status (exits.py): 0 done; 2 bad arguments or checkpoint (one line on stderr); 130 / 143 after
Ctrl-C / SIGTERM.
"""
import argparse
import os
import shutil
import sys
import tempfile

import checkpoints
import device
import exits
import sr  # TensorFlow is imported when the graph is built
import tflog
from exits import UsageError

SIGNATURE = 'serving_default'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Export a NatSR / FRSR generator as a TensorFlow SavedModel '
                                            '(uint8 RGB in, uint8 RGB out, any size).')
    p.add_argument('--model', default='NatSR', choices=tuple(checkpoints.MODEL_SCALES),
                   help='shipped model to export (default NatSR): its checkpoint is found under --modelpath as test.py does')
    p.add_argument('--modelpath', default='Model', help='checkpoint folder (default: Model)')
    p.add_argument('--checkpoint', default=None, metavar='PREFIX',
                   help='export this checkpoint prefix instead (e.g. a training checkpoint); needs --scale')
    p.add_argument('--scale', type=int, default=None,
                   help='scale of --checkpoint (a --model fixes its own)')
    p.add_argument('--arch', default='FRACTAL', metavar='NAME',
                   help='generator architecture of the checkpoint (model.GENERATORS; default: FRACTAL)')
    p.add_argument('--out', required=True, help='SavedModel folder to write (must not exist, unless --overwrite)')
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


def build_serving_graph(weights, scale, arch='FRACTAL'):
    """(uint8 input [N, H, W, 3], uint8 output [N, sH, sW, 3]) in the default graph: the generator
    `arch` with its `weights` ({name: array}) frozen as constants, as in sr.Generator (oneDNN's
    fast convolutions where TensorFlow runs oneDNN ops). The conversions are test.py's: float32 x / 255 in,
    floor(clip(y, 0, 1) * 255 + 0.5) (in float64: MATLAB's rounding, as utils.to_uint) out."""
    import tensorflow.compat.v1 as tf
    import model
    image = tf.placeholder(tf.uint8, [None, None, None, 3], name='image')
    # x / 255 exactly as test.py: a divisor grappler cannot fold into conv1's (constant) kernel
    x = tf.cast(image, tf.float32) / tf.placeholder_with_default(255.0, [], name='range')
    with tf.variable_scope(tf.get_variable_scope(), custom_getter=sr.constant_getter(weights)):
        y = tf.clip_by_value(model.generator(arch, x, scale).output, 0.0, 1.0)
    out = tf.cast(tf.floor(tf.cast(y, tf.float64) * 255.0 + 0.5), tf.uint8, name='sr_image')
    return image, out


def export(prefix, scale, out_dir, overwrite=False, arch='FRACTAL'):
    """Write the SavedModel of checkpoint `prefix` (generator `arch`, x`scale`) to `out_dir`
    (atomically: a temporary folder beside it, renamed at the end). Returns `out_dir`."""
    import tensorflow.compat.v1 as tf
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not overwrite:
        raise UsageError('%s exists (pass --overwrite to replace it)' % out_dir)
    try:
        gen = sr.Generator(scale, prefix, arch=arch)   # checks the checkpoint against the x`scale` graph
    except (checkpoints.CheckpointError, ValueError) as e:   # ValueError: an unknown --arch or scale
        raise UsageError(str(e))
    weights = gen.weights()
    gen.close()
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.export-', dir=parent)
    target = os.path.join(tmp, 'model')
    try:
        with tf.Graph().as_default() as graph:
            image, out = build_serving_graph(weights, scale, arch)
            with tf.Session(graph=graph, config=device.session_config()) as sess:
                signature = tf.saved_model.signature_def_utils.predict_signature_def(
                    inputs={'image': image}, outputs={'image': out})
                builder = tf.saved_model.Builder(target)
                builder.add_meta_graph_and_variables(
                    sess, [tf.saved_model.tag_constants.SERVING],
                    signature_def_map={SIGNATURE: signature}, strip_default_attrs=True)
                builder.save()
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(target, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def main(argv=None):
    args = parse_args(argv)
    tflog.init(args.verbose, graph=False)   # the serving graph is built in its own tf.Graph()
    device.select_gpu(args.gpu)
    return exits.main(lambda: run(args))


def run(args):
    prefix, scale = resolve(args)
    out = export(prefix, scale, args.out, args.overwrite, args.arch)
    print('exported %s (x%d) -> %s' % (prefix, scale, out))
    print("signature '%s': image uint8 [N, H, W, 3] -> image uint8 [N, %dH, %dW, 3]" % (SIGNATURE, scale, scale))


if __name__ == '__main__':
    sys.exit(main())
