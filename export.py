"""Export a NatSR / FRSR generator: a TensorFlow SavedModel (TF2 code, TensorFlow Serving), an ONNX
file, a TFLite file or an OpenVINO IR (--format; the last three need requirements/export.txt).

    python export.py --model FRSR --modelpath Model --out exported/FRSR_x4
    python export.py --model FRSR --format onnx --out exported/FRSR_x4.onnx
    python export.py --checkpoint runs/FRSR_x4_trial0/model-500 --scale 4 --out exported/mine
    python export.py --model FRSR --format onnx --io float32 --quantize int8 --calibration train_HR --out FRSR_int8.onnx
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
import sys

import utils

from natsr import checkpoints
from natsr import device
from natsr.deploy import convert
from natsr.deploy import quantize
from natsr.deploy.serving import SIGNATURE, export
from natsr.process import exits
from natsr.process import tflog
from natsr.process.exits import UsageError


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
                        '(an .xml file and its .bin); the last three need requirements/export.txt')
    p.add_argument('--io', default='uint8', choices=tuple(convert.IO_NAMES),
                   help='uint8 (default: uint8 RGB in and out, test.py\'s pixels) or float32 (RGB in [0, 1] in, '
                        'the unclipped network output out: what test.py --engine runs)')
    p.add_argument('--quantize', default=None, choices=('int8',),
                   help='int8: an eight-bit model (onnx or openvino; natsr/deploy/quantize.py, docs/export.md#int8), '
                        'calibrated on LR patches cut from --calibration')
    p.add_argument('--calibration', default=None, metavar='DIR',
                   help='folder of training images for --quantize (never a benchmark or the validation set)')
    p.add_argument('--calibration-patches', type=int, default=quantize.DEFAULT_PATCHES, metavar='N',
                   help='LR patches of %d x %d pixels cut from --calibration (default %d, at least %d)'
                        % (quantize.PATCH, quantize.PATCH, quantize.DEFAULT_PATCHES, quantize.MIN_PATCHES))
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


def calibration(args, scale):
    """The LR patches of --quantize int8 (None without it); UsageError (one line) for a format that
    cannot be quantized, a missing or empty folder, or too few patches."""
    if args.quantize is None:
        if args.calibration:
            raise UsageError('--calibration is read by --quantize int8 only')
        return None
    if args.format not in quantize.QUANTIZER:
        raise UsageError('--quantize int8 needs --format onnx or openvino (not %s)' % args.format)
    lacks = convert.missing(args.format) or quantize.missing(args.format)
    if lacks:
        raise UsageError('--quantize int8 needs the package %s (pip install -r requirements/export.txt)' % lacks)
    if not args.calibration:
        raise UsageError('--quantize int8 needs --calibration DIR, a folder of training images')
    try:
        return quantize.calibration_patches(args.calibration, args.calibration_patches, scale)
    except (ValueError, utils.ImageError) as e:
        raise UsageError(str(e))


def main(argv=None):
    args = parse_args(argv)
    tflog.init(args.verbose, graph=False)   # the serving graph is built in its own tf.Graph()
    device.select_gpu(args.gpu)
    return exits.main(lambda: run(args))


def run(args):
    prefix, scale = resolve(args)
    patches = calibration(args, scale)
    out = export(prefix, scale, args.out, args.overwrite, args.arch, args.format, args.io, patches)
    print('exported %s (x%d)%s -> %s' % (prefix, scale, ', int8 (%d calibration patches)' % len(patches)
                                         if patches else '', out))
    ends = ('image', 'image') if args.format == 'savedmodel' and args.io == 'uint8' else convert.IO_NAMES[args.io]
    print("%s: %s %s [N, H, W, 3] -> %s %s [N, %dH, %dW, 3]" % (
        "signature '%s'" % SIGNATURE if args.format == 'savedmodel' else args.format,
        ends[0], args.io, ends[1], args.io, scale, scale))


if __name__ == '__main__':
    sys.exit(main())
