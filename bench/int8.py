"""The loss of export.py's int8 model (natsr/deploy/quantize.py) against the float32 export of the same
checkpoint, for each quantization scheme, in ONNX Runtime (quantize_static) or OpenVINO (NNCF).

    python bench/int8.py --checkpoint Model/FRSR --calibration ../shared/data/General100/HR --sets DIV2K
    python bench/int8.py --runtime openvino --calibration ../shared/data/General100/HR --schemes blocks:mixed,all
    python bench/int8.py --checkpoint Model/FRSR --calibration ../shared/data/General100/HR --groups
    python bench/int8.py --checkpoint Model/FRSR --calibration ../shared/data/General100/HR --sets Set5,BSD100

A set is a folder of HR images under --data (SET/HR); its LR images are made with MATLAB's bicubic
(x --scale) and rounded to 8 bits, as export.py's calibration patches are. Each image runs whole.
For every scheme and set: the mean change of PSNR-Y (the paper's protocol) against HR, int8 minus
fp32, and the worst image's; the share of output pixels (uint8, every channel) more than one level
off the fp32 export's output, mean and worst image; and the seconds per image of both. --groups
quantizes one node group at a time (GROUPS, ONNX Runtime only) beside the schemes: which layers make
int8 lossy.
"""
import argparse
import os
import sys
import tempfile
import time

if __package__ in (None, ''):  # run as a script: the project root first on sys.path (docs/layout.md)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np

from natsr.deploy import quantize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Node groups of the generator (regular expressions on the ONNX node names, quantize.SCHEMES' kind)
GROUPS = {
    'conv1': r'^GEN/conv1/',
    'blocks conv0 (reads the stream)': r'Block\d+/conv0/|Block\d+/Relu$',
    'blocks conv1..4 + concats': r'Block\d+/(conv[1-4]/|Relu_|concat)',
    'blocks 1x1 fusion': r'Block\d+/conv_fusion/',
    'blocks 0.1-scaled adds': r'Block\d+/(mul|add)',
    'long skips + conv2': r'^GEN/(add|conv2/)',
    'sub-pixel stage': r'conv_up|DepthToSpace',
    'conv_out': r'conv_out',
}


def score(runs, items, scale):
    """{name: (mean dB change, worst dB change, mean share > 1 level, worst share, s per image)} of each
    int8 run against runs['fp32'] on `items` [(hr, lr)]."""
    import utils
    from natsr.evaluation import metrics
    out, base = {}, []
    for name, run in runs.items():
        rows = []
        for k, (hr, lr) in enumerate(items):
            t = time.time()
            sr = utils.to_uint(np.clip(run(lr[None])[0], 0, 1))
            seconds = time.time() - t
            if name == 'fp32':
                base.append(sr)
                rows.append((metrics.psnr(sr, hr, scale), 0.0, seconds))
            else:
                off = np.mean(np.abs(sr.astype(int) - base[k].astype(int)) > 1)
                rows.append((metrics.psnr(sr, hr, scale) - metrics.psnr(base[k], hr, scale), off, seconds))
        rows = np.array(rows)
        out[name] = (rows[:, 0].mean(), rows[:, 0].min(), rows[:, 1].mean(), rows[:, 1].max(), np.median(rows[:, 2]))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--checkpoint', default=os.path.join(ROOT, 'Model', 'FRSR'), help='GEN checkpoint prefix')
    p.add_argument('--scale', type=int, default=4)
    p.add_argument('--calibration', required=True, help='folder of training images (export.py --calibration)')
    p.add_argument('--calibration-patches', type=int, default=quantize.DEFAULT_PATCHES,
                   help='LR patches cut from --calibration (default %(default)s, as export.py)')
    p.add_argument('--data', default=os.path.join(ROOT, '..', 'shared', 'data'), help='folder of the sets')
    p.add_argument('--sets', default='DIV2K', help='comma-separated sets under --data (default: DIV2K, the validation set)')
    p.add_argument('--limit', type=int, default=0, help='at most N images per set (0: all)')
    p.add_argument('--runtime', default='onnxruntime', choices=('onnxruntime', 'openvino'),
                   help='onnxruntime (quantize_static; default) or openvino (NNCF): export.py --format onnx / openvino')
    p.add_argument('--schemes', default='blocks,all',
                   help='quantize.SCHEMES to measure, each optionally :METHOD (onnxruntime: quantize.METHODS, default '
                        'percentile; openvino: quantize.PRESETS, default mixed), e.g. blocks,blocks:minmax '
                        '(default: blocks,all)')
    p.add_argument('--groups', action='store_true', help='also quantize each of GROUPS alone (onnxruntime only)')
    args = p.parse_args(argv)
    if args.groups and args.runtime != 'onnxruntime':
        p.error('--groups names ONNX nodes: it runs with --runtime onnxruntime only')
    from natsr.process import tflog
    tflog.init(graph=False)
    import utils
    from natsr.deploy import convert, engines, serving
    from natsr.inference import sr
    patches = quantize.calibration_patches(args.calibration, args.calibration_patches, args.scale)
    gen = sr.Generator(args.scale, args.checkpoint)
    weights = gen.weights()
    gen.close()
    schemes = {s: tuple(s.split(':', 1)) for s in args.schemes.split(',') if s}   # name: (scheme, method)
    if args.groups:
        schemes.update({name: (rule,) for name, rule in GROUPS.items()})
    with tempfile.TemporaryDirectory(prefix='natsr-int8-') as tmp:
        fp32 = serving.export_weights(weights, args.scale, os.path.join(tmp, 'fp32.onnx'), fmt='onnx', io='float32')
        suffix = convert.SUFFIX[engines.FORMAT[args.runtime]]
        if args.runtime == 'openvino':
            convert.to_openvino(fp32, os.path.join(tmp, 'fp32.xml'))
        runs = {'fp32': engines.load(args.runtime, fp32[:-len('.onnx')] + suffix)}
        quantizer = quantize.quantize if args.runtime == 'onnxruntime' else quantize.quantize_openvino
        for name, scheme in schemes.items():
            path = os.path.join(tmp, 'q%d%s' % (len(runs), suffix))
            t = time.time()
            quantizer(fp32, path, patches, *scheme)
            print('quantized %s in %.0f s' % (name, time.time() - t), file=sys.stderr)
            runs[name] = engines.load(args.runtime, path)
        print('| set | scheme | dB change, mean | worst image | pixels > 1 level off, mean | worst image | s / image |')
        print('|---|---|---|---|---|---|---|')
        for name in args.sets.split(','):
            files = utils.list_folder(os.path.join(args.data, name, 'HR'))[:args.limit or None]
            items = []
            for f in files:
                hr = utils.modcrop(utils.read_rgb8(f), args.scale)
                items.append((hr, quantize.lr_of(hr, args.scale)))
            for scheme, (mean, worst, off, off_worst, seconds) in score(runs, items, args.scale).items():
                print('| %s (%d) | %s | %+.3f | %+.3f | %.3f %% | %.3f %% | %.2f |'
                      % (name, len(items), scheme, mean, worst, 100 * off, 100 * off_worst, seconds), flush=True)


if __name__ == '__main__':
    main()
