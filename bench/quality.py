"""Quality benchmark of the paper's tables: bicubic, FRSR and NatSR at x4 on Set5, Set14 and BSD100.

    python bench/quality.py                       # data from ../shared/data, models from Model/
    python bench/quality.py --data DIR --modelpath Model --out bench_out --limit 0

LR = MATLAB bicubic imresize(modcrop(HR, 4), 1/4) of the uint8 HR (computed, as the authors did with
MATLAB). Writes to --out:
- quality.md: PSNR / SSIM (Y, `scale` pixels shaved) and NIQE per method and set, beside the paper's
  published figures;
- perception_distortion.png: RMSE against NIQE on BSD100, one point per method, HR's NIQE as a line;
- crops.png: side-by-side crops bicubic / FRSR / NatSR / HR;
- per_image.csv: every score.
"""
import argparse
import csv
import os
import sys

import numpy as np
from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
import tflog  # noqa: E402

tflog.quiet()
import metrics  # noqa: E402
import utils  # noqa: E402
from imresize import imresize  # noqa: E402

SETS = ('Set5', 'Set14', 'BSD100')
METHODS = ('bicubic', 'FRSR', 'NatSR')
# Published x4 figures (NatSR paper, Table 2 and Fig. 7): PSNR dB / SSIM, and NIQE on BSD100.
PAPER = {
    'bicubic': {'Set5': (28.42, 0.8104), 'Set14': (26.00, 0.7027), 'BSD100': (25.96, 0.6675), 'niqe': 7.57},
    'FRSR': {'Set5': (32.20, 0.8939), 'Set14': (28.54, 0.7808), 'BSD100': (27.60, 0.7366), 'niqe': None},
    'NatSR': {'Set5': (30.98, 0.8606), 'Set14': (27.42, 0.7329), 'BSD100': (26.44, 0.6827), 'niqe': 3.80},
    'HR': {'niqe': 3.18},
}
CROPS = (('Set14', 'baboon', 0.55, 0.35), ('BSD100', '253027', 0.5, 0.5), ('Set5', 'butterfly', 0.5, 0.45))


def load_set(folder, scale, limit):
    """[(name, HR uint8 RGB, LR uint8 RGB)] of a benchmark folder; gray HR as 3 equal channels."""
    files = utils.list_images(folder)[:limit or None]
    out = []
    for path in files:
        hr = metrics.modcrop(utils.to_uint8(utils.to_rgb(utils.read_image(path))), scale)
        out.append((os.path.splitext(os.path.basename(path))[0], hr, imresize(hr, 1.0 / scale)))
    return out


def upscale(method, lr, scale, generators):
    if method == 'bicubic':
        return utils.to_uint(np.clip(imresize(utils.to_float(lr), scale), 0, 1))
    return utils.to_uint(np.clip(generators[method](utils.to_float(lr)), 0, 1))


def evaluate(sets, methods, scale, generators, with_niqe):
    """{(method, set): [(name, psnr, ssim, niqe)]} and {set: {name: {method: SR}}} for the crops."""
    scores, images = {}, {}
    for set_name, items in sets.items():
        for method in methods:
            rows = []
            for name, hr, lr in tqdm(items, desc='%s %s' % (method, set_name), file=sys.stderr, leave=False):
                out = upscale(method, lr, scale, generators)
                niqe = metrics.niqe(out, scale) if with_niqe else float('nan')
                rows.append((name, metrics.psnr(out, hr, scale), metrics.ssim(out, hr, scale), niqe))
                images.setdefault(set_name, {}).setdefault(name, {})[method] = out
            scores[(method, set_name)] = rows
        if with_niqe:
            scores[('HR', set_name)] = [(name, float('nan'), float('nan'), metrics.niqe(hr, scale))
                                        for name, hr, _ in items]
    return scores, images


def mean(rows, col):
    return float(np.mean([r[col] for r in rows])) if rows else float('nan')


def table(scores, sets, methods, counts):
    """The Markdown report: ours beside the paper's, per set."""
    head = '| method | ' + ' | '.join('%s PSNR / SSIM (paper)' % s for s in sets) + ' | BSD100 NIQE (paper) |'
    lines = [head, '|' + '---|' * (len(sets) + 2)]
    for method in list(methods) + ['HR']:
        cells = []
        for s in sets:
            if method == 'HR':
                cells.append('-')
                continue
            p = PAPER[method].get(s)
            rows = scores.get((method, s), [])
            cells.append('%.2f / %.4f (%s)' % (mean(rows, 1), mean(rows, 2), '%.2f / %.4f' % p if p else '-'))
        niqe_rows = scores.get((method, 'BSD100'), [])
        paper_niqe = PAPER.get(method, {}).get('niqe')
        cells.append('%.2f (%s)' % (mean(niqe_rows, 3), '%.2f' % paper_niqe if paper_niqe else '-')
                     if niqe_rows else '-')
        lines.append('| %s | %s |' % (method, ' | '.join(cells)))
    lines.append('')
    lines.append('x4; images per set: %s. PSNR / SSIM on the BT.601 Y channel with 4 pixels shaved, NIQE with '
                 'the same shave (lower is better).' % ', '.join('%s %d' % (s, counts[s]) for s in sets))
    return '\n'.join(lines) + '\n'


def plot_perception_distortion(scores, methods, path, set_name='BSD100'):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for method in methods:
        rows = scores.get((method, set_name), [])
        if rows:
            rmse = float(np.mean([255.0 * 10 ** (-r[1] / 20) for r in rows if np.isfinite(r[1])]))
            ax.scatter(mean(rows, 3), rmse, s=40)
            ax.annotate(method, (mean(rows, 3), rmse), textcoords='offset points', xytext=(6, 4))
    if scores.get(('HR', set_name)):
        ax.axvline(mean(scores[('HR', set_name)], 3), color='gray', linestyle='--', label='HR NIQE')
        ax.legend(loc='upper right')
    ax.set_xlabel('NIQE (lower: more natural)')
    ax.set_ylabel('RMSE on Y (lower: more faithful)')
    ax.set_title('Perception-distortion, %s x4' % set_name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with utils.atomic_path(path) as tmp:
        fig.savefig(tmp, format='png')
    plt.close(fig)


def plot_crops(images, sets, methods, path, size=64):
    """Rows: crops of a few images; columns: methods then HR (nearest-neighbour zoom)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    picks = [(s, n, fy, fx) for s, n, fy, fx in CROPS if n in images.get(s, {})]
    if not picks:  # a subset without the usual images: the first image of each set
        picks = [(s, sorted(images[s])[0], 0.5, 0.5) for s in sets if images.get(s)]
    cols = list(methods) + ['HR']
    fig, axes = plt.subplots(len(picks), len(cols), figsize=(2.2 * len(cols), 2.3 * len(picks)), dpi=120,
                             squeeze=False)
    for row, (s, name, fy, fx) in enumerate(picks):
        hr = images[s][name]['HR']
        h, w = hr.shape[:2]
        c = min(size, h, w)
        y0, x0 = int((h - c) * fy), int((w - c) * fx)
        for col, method in enumerate(cols):
            ax = axes[row][col]
            ax.imshow(images[s][name][method][y0:y0 + c, x0:x0 + c], interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(method)
            if col == 0:
                ax.set_ylabel('%s %s' % (s, name))
    fig.tight_layout()
    with utils.atomic_path(path) as tmp:
        fig.savefig(tmp, format='png')
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', default=os.path.join(ROOT, '..', 'shared', 'data'),
                   help='folder holding Set5/HR, Set14/HR, BSD100/HR (default: ../shared/data)')
    p.add_argument('--modelpath', default=os.path.join(ROOT, 'Model'), help='checkpoints FRSR and NatSR (default: Model)')
    p.add_argument('--out', default='bench_out', help='output folder (default: bench_out)')
    p.add_argument('--limit', type=int, default=0, help='at most N images per set (0: all)')
    p.add_argument('--no_niqe', action='store_true', help='skip NIQE (faster)')
    args = p.parse_args(argv)
    scale = 4
    try:
        sets = {s: load_set(os.path.join(args.data, s, 'HR'), scale, args.limit) for s in SETS}
    except (FileNotFoundError, utils.ImageError) as e:
        print('error: %s' % e, file=sys.stderr)
        return 2
    import sr
    generators = {}
    try:
        for m in METHODS[1:]:
            generators[m] = sr.Generator(scale, sr.find_checkpoint(args.modelpath, m))
    except sr.CheckpointError as e:
        print('error: %s' % e, file=sys.stderr)
        return 2
    print('device: %s' % next(iter(generators.values())).device, file=sys.stderr)
    scores, images = evaluate(sets, METHODS, scale, generators, not args.no_niqe)
    for s, items in sets.items():
        for name, hr, _ in items:
            images[s][name]['HR'] = hr
    os.makedirs(args.out, exist_ok=True)
    report = table(scores, SETS, METHODS, {s: len(v) for s, v in sets.items()})
    with utils.atomic_path(os.path.join(args.out, 'quality.md')) as tmp, open(tmp, 'w') as f:
        f.write(report)
    with utils.atomic_path(os.path.join(args.out, 'per_image.csv')) as tmp, open(tmp, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['method', 'set', 'image', 'psnr', 'ssim', 'niqe'])
        for (method, s), rows in sorted(scores.items()):
            for r in rows:
                w.writerow([method, s] + ['%.6g' % v if isinstance(v, float) else v for v in r])
    if not args.no_niqe:
        plot_perception_distortion(scores, METHODS, os.path.join(args.out, 'perception_distortion.png'))
    plot_crops(images, SETS, METHODS, os.path.join(args.out, 'crops.png'))
    print(report)
    print('written: %s' % ', '.join(sorted(os.listdir(args.out))))
    return 0


if __name__ == '__main__':
    sys.exit(main())
