"""PSNR change of a reduced precision against fp32, on a folder pair (Set5 x4 by default).

    python bench/precision_psnr.py --checkpoint Model/FRSR --precision fp32,bf16
    python bench/precision_psnr.py --checkpoint Model/FRSR --precision fp32,bf16 --emulate-bf16  # CPU w/o AVX512_BF16

For each precision: mean PSNR / SSIM against HR (the paper's protocol, metrics.py), the change against
fp32, the PSNR of its output against the fp32 output, and the seconds per image (median). A precision
that loses more than 0.05 dB is not "safe" in the README's sense.
"""
import argparse
import os
import sys
import time

if __package__ in (None, ''):  # run as a script: the project root first on sys.path (docs/layout.md)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAFE_DB = 0.05


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--checkpoint', default=None, help='GEN checkpoint prefix (default: random weights, seed 0)')
    p.add_argument('--scale', type=int, default=4)
    p.add_argument('--datapath', default=os.path.join(ROOT, '..', 'shared', 'data', 'Set5', 'LR_bicubic', 'X4'))
    p.add_argument('--labelpath', default=os.path.join(ROOT, '..', 'shared', 'data', 'Set5', 'HR'))
    p.add_argument('--precision', default='fp32,bf16')
    p.add_argument('--emulate-bf16', action='store_true', help='software bfloat16 on CPUs without AVX512_BF16 / AMX')
    args = p.parse_args(argv)
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
    from natsr.process import tflog
    tflog.init(graph=False)   # sr.Generator builds its own graphs, as in test.py
    import importlib.util
    from natsr import device
    from natsr.evaluation import metrics
    from natsr.inference import sr
    import utils
    spec = importlib.util.spec_from_file_location('natsr_test_script', os.path.join(ROOT, 'test.py'))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    pairs = script.pair_files(utils.list_images(args.datapath), utils.list_images(args.labelpath), args.scale)
    images = [(utils.read_image(lr), utils.read_image(hr)) for lr, hr in pairs]
    precisions = [q.strip() for q in args.precision.split(',')]
    if precisions[0] != 'fp32':
        precisions.insert(0, 'fp32')
    print('# %s, %s, %s weights, %d images from %s' % (device.cpu_model(), device.device_name(), args.checkpoint or 'random',
                                                       len(images), args.datapath))
    print('| precision | how | PSNR | SSIM | change vs fp32 (dB) | PSNR vs fp32 output | s / image | safe |')
    print('|---|---|---|---|---|---|---|---|')
    ref = None
    for q in precisions:
        try:
            gen = sr.Generator(args.scale, args.checkpoint, precision=q, seed=0, emulate_bf16=args.emulate_bf16)
        except device.PrecisionError as e:
            print('| %s | not run here: %s | | | | | | |' % (q, e))
            continue
        outs, secs = [], []
        for lr, _ in images:
            t = time.perf_counter()
            outs.append(script.upscale_image(lr, args.scale, lambda rgb: gen(rgb, tile=0)))
            secs.append(time.perf_counter() - t)
        gen.close()
        rows = [script.score(o, hr, args.scale, '', ['psnr', 'ssim']) for o, (_, hr) in zip(outs, images)]
        psnr, ssim = np.mean([r['psnr'] for r in rows]), np.mean([r['ssim'] for r in rows])
        if ref is None:
            ref = (psnr, outs)
        vs = np.mean([metrics.psnr(o, r, 0) if not np.array_equal(o, r) else np.inf for o, r in zip(outs, ref[1])])
        delta = psnr - ref[0]
        print('| %s | %s | %.3f | %.4f | %+.3f | %s | %.2f | %s |'
              % (q, gen.plan.what, psnr, ssim, delta, 'identical' if np.isinf(vs) else '%.1f dB' % vs,
                 float(np.median(secs)), 'yes' if delta >= -SAFE_DB else 'no'))
        sys.stdout.flush()
    return 0


if __name__ == '__main__':
    sys.exit(main())
