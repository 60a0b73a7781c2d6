"""A compact copy of an HR pool for tools/torch_train.py on a machine without TensorFlow.

For each HR image with at least one patch kept by generate_Dataset's rule (patches.select, the
same grid and filter as generate_NatSR.py), writes the image to OUT/hr/ (JPEG sources copied
byte for byte, others as lossless WebP, which is smaller than PNG) and its kept corners to
OUT/corners.json. LR patches are computed where the training runs, with imresize.py.

    python tools/prepare_pool.py --labelpath DATA/T91/HR DATA/BSDS300_train/HR DATA/General100/HR \\
        --out .gpu_data --scale 4 --stride 48
"""
import argparse
import json
import os
import shutil
import sys
from multiprocessing import Pool

import numpy as np
from PIL import Image

if __package__ in (None, ''):  # run as a script: the project root first on sys.path (docs/layout.md)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import utils
from generate_Dataset import patches


def _one(job):
    path, out, scale, patch, stride = job
    hr = utils.modcrop(utils.read_rgb8(path), scale)
    kept, rejected = patches.select(hr, patch, stride, scale)    # none when the image is too small
    if not kept:
        return None
    name, ext = os.path.splitext(os.path.basename(path))
    if ext.lower() in ('.jpg', '.jpeg'):
        shutil.copyfile(path, os.path.join(out, 'hr', name + ext))
    else:
        Image.fromarray(np.ascontiguousarray(hr)).save(os.path.join(out, 'hr', name + '.webp'), 'WEBP',
                                                       lossless=True, method=4)
    return name, kept, rejected


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--labelpath', nargs='+', required=True)
    p.add_argument('--out', required=True)
    p.add_argument('--scale', type=int, choices=(2, 3, 4), default=4)
    p.add_argument('--patch', type=int, help='HR patch side (default 48 * scale)')
    p.add_argument('--stride', type=int, default=patches.STRIDE)
    p.add_argument('--workers', type=int, default=os.cpu_count())
    args = p.parse_args(argv)
    patch = args.patch or patches.PATCH_PER_SCALE * args.scale
    os.makedirs(os.path.join(args.out, 'hr'), exist_ok=True)
    files = [f for d in args.labelpath for f in utils.list_images(d)]
    names = [os.path.splitext(os.path.basename(f))[0] for f in files]
    if len(set(names)) != len(names):
        raise SystemExit('%s: two images share a name' % args.labelpath)
    with Pool(args.workers) as pool:
        res = [r for r in pool.map(_one, [(f, args.out, args.scale, patch, args.stride) for f in files]) if r]
    corners = {name: kept for name, kept, _ in res}
    with open(os.path.join(args.out, 'corners.json'), 'w') as f:
        json.dump({'scale': args.scale, 'patch': patch, 'stride': args.stride, 'corners': corners}, f)
    print('%d of %d images, %d patches kept, %d rejected' % (
        len(res), len(files), sum(len(k) for k in corners.values()), sum(r for _, _, r in res)))


if __name__ == '__main__':
    main()
