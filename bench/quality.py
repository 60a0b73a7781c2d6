"""Quality benchmark of the paper's tables: bicubic, FRSR and NatSR at x4, and bicubic, FRSR_x2 and
FRSR_x3 at x2 / x3, on Set5, Set14 and BSD100; the NatSR dial (FRSR / NatSR weight blends).

    python bench/quality.py                       # data from --data's default, models from Model/
    python bench/quality.py --data DIR --modelpath Model --out bench_out --limit 0 --scales 4,2,3

LR = MATLAB bicubic imresize(modcrop(HR, s), 1/s) of the uint8 HR (computed, as the authors did with
MATLAB; bit for bit the same). A scale whose model is missing from --modelpath is skipped with a note.
Writes to --out:
- quality.md: PSNR / SSIM (Y, `scale` pixels shaved), NIQE (BSD100) and the upsampler grid (BSD100)
  per method and set, beside the paper's published figures; the dial's table;
- perception_distortion.png: PSNR against NIQE on BSD100 x4, one point per method, the dial's curve;
- crops.png: side-by-side x4 crops (bicubic / FRSR / NatSR / HR) of textured patches;
- per_image.csv: every score.

Grid (metrics.grid): energy of the detail a method adds to FRSR at the 63 non-zero frequencies of the
8x8 lattice at x4 (period 2 x scale: the upsampler's 4x4 lattice and dots that flip sign from one LR
pixel to the next), over the same energy of the real detail (HR - FRSR); median over BSD100.
1 = as much as real detail; the first shipped NatSR, whose dots were plain to see, scored 9.9.
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

tflog.init(graph=False)   # sr.Generator builds its own graphs
import metrics  # noqa: E402
import utils  # noqa: E402
from imresize import imresize  # noqa: E402

SETS = ('Set5', 'Set14', 'BSD100')
METHODS = {4: ('bicubic', 'FRSR', 'NatSR'), 2: ('bicubic', 'FRSR_x2'), 3: ('bicubic', 'FRSR_x3')}
BLENDS = (0.25, 0.5, 0.75)          # the dial: (1 - a) * FRSR + a * NatSR (0 and 1 are FRSR and NatSR)
# Published figures: PSNR dB / SSIM (x4: NatSR paper, Table 2 and Fig. 7, with NIQE on BSD100;
# x2 / x3 bicubic: the values the SR literature usually quotes).
PAPER = {
    4: {'bicubic': {'Set5': (28.42, 0.8104), 'Set14': (26.00, 0.7027), 'BSD100': (25.96, 0.6675), 'niqe': 7.57},
        'FRSR': {'Set5': (32.20, 0.8939), 'Set14': (28.54, 0.7808), 'BSD100': (27.60, 0.7366)},
        'NatSR': {'Set5': (30.98, 0.8606), 'Set14': (27.42, 0.7329), 'BSD100': (26.44, 0.6827), 'niqe': 3.80},
        'HR': {'niqe': 3.18}},
    2: {'bicubic': {'Set5': (33.66, 0.9299), 'Set14': (30.24, 0.8688), 'BSD100': (29.56, 0.8431)}},
    3: {'bicubic': {'Set5': (30.39, 0.8682), 'Set14': (27.55, 0.7742), 'BSD100': (27.21, 0.7385)}},
}
CROPS = (('Set14', 'baboon', 0.55, 0.35), ('BSD100', '253027', 0.5, 0.5), ('photo', 'chelsea', 0.45, 0.55),
         ('Set5', 'butterfly', 0.5, 0.45))


def blend_name(a):
    return 'NatSR@%g' % a


def load_set(folder, scale, limit):
    """[(name, HR uint8 RGB, LR uint8 RGB)] of a benchmark folder; gray HR as 3 equal channels."""
    out = []
    for path in utils.list_images(folder)[:limit or None]:
        hr = utils.modcrop(utils.read_rgb8(path), scale)
        out.append((os.path.splitext(os.path.basename(path))[0], hr, imresize(hr, 1.0 / scale)))
    return out


def upscale(method, lr, scale, generators):
    if method == 'bicubic':
        return utils.to_uint(np.clip(imresize(utils.to_float(lr), scale), 0, 1))
    return utils.to_uint(np.clip(generators[method](utils.to_float(lr)), 0, 1))


def evaluate(items, set_name, methods, scale, generators, with_niqe, base='FRSR'):
    """Per-image score rows of `methods` on one set, and {name: {method: SR}}. The grid of a method
    is measured against `base`'s output (the model it was fine-tuned from), when `base` ran first, at
    the lattice of period 2 x scale: it holds the upsampler's period-`scale` lattice and also catches
    dots whose sign flips from one LR pixel to the next (the first shipped NatSR's)."""
    rows, outputs = [], {}
    skip = () if with_niqe else ('niqe',)
    for method in methods:
        for name, hr, lr in tqdm(items, desc='x%d %s %s' % (scale, method, set_name), file=sys.stderr, leave=False):
            out = upscale(method, lr, scale, generators)
            first = outputs.setdefault(name, {})
            first[method] = out
            own = first.get(base) if method not in (base, 'bicubic') else None
            rows.append(dict(method=method, scale=scale, set=set_name, image=name,
                             **scores(out, scale, hr, own, skip)))
    if with_niqe:
        rows += [dict(method='HR', scale=scale, set=set_name, image=name, **scores(hr, scale, skip=skip))
                 for name, hr, _ in items]
    return rows, outputs


def scores(sr, scale, hr=None, base=None, skip=()):
    """{name: value} of every metric of metrics.METRICS not in `skip`: NaN where an input it needs
    (HR, the base model's output) is not given."""
    given = {'hr': hr, 'base': base}
    return {name: metrics.measure(name, sr, scale, hr, base)
            if name not in skip and all(given[k] is not None for k in m.needs) else np.nan
            for name, m in metrics.METRICS.items()}


def summary(rows, method, set_name, key, how=np.mean):
    vals = [r[key] for r in rows if r['method'] == method and r['set'] == set_name and np.isfinite(r[key])]
    return float(how(vals)) if vals else np.nan


def fmt(value, pattern):
    return pattern % value if np.isfinite(value) else '-'


def table(rows, scale, methods, counts):
    """The Markdown table of one scale: ours beside the paper's, per set; NIQE and grid on BSD100."""
    paper = PAPER.get(scale, {})
    head = ('| method | ' + ' | '.join('%s PSNR / SSIM (paper)' % s for s in SETS)
            + ' | BSD100 NIQE (paper) | BSD100 grid |')
    lines = ['### x%d' % scale, '', head, '|' + '---|' * (len(SETS) + 3)]
    for method in list(methods) + ['HR']:
        ours = paper.get(method, {})
        cells = []
        for s in SETS:
            if method == 'HR':
                cells.append('-')
                continue
            p = ours.get(s)
            cells.append('%.2f / %.4f (%s)' % (summary(rows, method, s, 'psnr'), summary(rows, method, s, 'ssim'),
                                               '%.2f / %.4f' % p if p else '-'))
        niqe = summary(rows, method, 'BSD100', 'niqe')
        cells.append('%s (%s)' % (fmt(niqe, '%.2f'), fmt(ours.get('niqe', np.nan), '%.2f')) if np.isfinite(niqe)
                     else '-')
        cells.append(fmt(summary(rows, method, 'BSD100', 'grid', np.median), '%.2f'))
        lines.append('| %s | %s |' % (method, ' | '.join(cells)))
    lines += ['', 'Images per set: %s. PSNR / SSIM on the BT.601 Y channel with %d pixels shaved, NIQE with the '
              'same shave (lower is better); grid: median over BSD100 of the energy of the detail added to FRSR '
              "at the frequencies of the period-%d lattice (twice the x%d upsampler's period), over real "
              "detail's (1 = as much as real detail)."
              % (', '.join('%s %d' % (s, counts[s]) for s in SETS), scale, 2 * scale, scale), '']
    return '\n'.join(lines)


def dial_table(rows):
    """PSNR / NIQE / grid on BSD100 along the dial, a = 0 (FRSR) .. 1 (NatSR)."""
    lines = ['### The dial: (1 - a) FRSR + a NatSR, BSD100 x4', '',
             '| a | PSNR / SSIM | NIQE | grid |', '|---|---|---|---|']
    for a, method in dial_points(rows):
        lines.append('| %g | %.2f / %.4f | %s | %s |' % (
            a, summary(rows, method, 'BSD100', 'psnr'), summary(rows, method, 'BSD100', 'ssim'),
            fmt(summary(rows, method, 'BSD100', 'niqe'), '%.2f'),
            fmt(summary(rows, method, 'BSD100', 'grid', np.median), '%.2f') if a else '0'))
    return '\n'.join(lines) + '\n'


def dial_points(rows):
    present = {r['method'] for r in rows if r['scale'] == 4}
    points = [(0.0, 'FRSR')] + [(a, blend_name(a)) for a in BLENDS] + [(1.0, 'NatSR')]
    return [(a, m) for a, m in points if m in present]


def plot_perception_distortion(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    x4 = [r for r in rows if r['scale'] == 4]
    dial = dial_points(x4)
    if len(dial) > 2:
        xs = [summary(x4, m, 'BSD100', 'niqe') for _, m in dial]
        ys = [summary(x4, m, 'BSD100', 'psnr') for _, m in dial]
        ax.plot(xs, ys, '-', color='tab:blue', alpha=0.6, zorder=1, label='dial (1 - a) FRSR + a NatSR')
        for (a, _), x, y in zip(dial, xs, ys):
            if 0 < a < 1:
                ax.scatter(x, y, s=18, color='tab:blue', zorder=2)
                ax.annotate('a=%g' % a, (x, y), textcoords='offset points', xytext=(5, 3), fontsize=8)
    for method in METHODS[4]:
        x, y = summary(x4, method, 'BSD100', 'niqe'), summary(x4, method, 'BSD100', 'psnr')
        if np.isfinite(x) and np.isfinite(y):
            ax.scatter(x, y, s=40, zorder=3)
            ax.annotate(method, (x, y), textcoords='offset points', xytext=(6, -10))
    hr_niqe = summary(x4, 'HR', 'BSD100', 'niqe')
    if np.isfinite(hr_niqe):
        ax.axvline(hr_niqe, color='gray', linestyle='--', label='HR NIQE')
    ax.legend(loc='lower right', fontsize=8)
    ax.set_xlabel('NIQE (lower: more natural)')
    ax.set_ylabel('PSNR on Y, dB (higher: more faithful)')
    ax.set_title('Perception-distortion, BSD100 x4')
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with utils.atomic_path(path) as tmp:
        fig.savefig(tmp, format='png')
    plt.close(fig)


def plot_crops(images, methods, path, size=64):
    """Rows: crops of textured images; columns: methods then HR (nearest-neighbour zoom)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    picks = [(s, n, fy, fx) for s, n, fy, fx in CROPS if n in images.get(s, {})]
    if not picks:  # a subset without the usual images: the first image of each set
        picks = [(s, sorted(images[s])[0], 0.5, 0.5) for s in SETS if images.get(s)]
    cols = [m for m in methods if all(m in images[s][n] for s, n, _, _ in picks)] + ['HR']
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


def photo_crops(methods, generators, scale=4):
    """scikit-image's bundled chelsea (the cat's fur, as in `python test.py`'s default job)."""
    import skimage.data
    hr = utils.modcrop(skimage.data.chelsea(), scale)
    lr = imresize(hr, 1.0 / scale)
    return {'chelsea': dict({m: upscale(m, lr, scale, generators) for m in methods}, HR=hr)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', default=os.path.join(ROOT, '..', 'shared', 'data'),
                   help='folder holding Set5/HR, Set14/HR, BSD100/HR (default: ../shared/data)')
    p.add_argument('--modelpath', default=os.path.join(ROOT, 'Model'),
                   help='checkpoints FRSR, NatSR, FRSR_x2, FRSR_x3 (default: Model)')
    p.add_argument('--out', default='bench_out', help='output folder (default: bench_out)')
    p.add_argument('--limit', type=int, default=0, help='at most N images per set (0: all)')
    p.add_argument('--scales', default='4,2,3', help='scales to benchmark (default: 4,2,3)')
    p.add_argument('--no_niqe', action='store_true', help='skip NIQE (faster)')
    p.add_argument('--no_dial', action='store_true', help='skip the FRSR / NatSR blends')
    args = p.parse_args(argv)
    import checkpoints
    import sr
    rows, report, images = [], [], {}
    for scale in [int(s) for s in args.scales.split(',')]:
        if scale not in METHODS:
            print('error: --scales: %d is not one of %s' % (scale, sorted(METHODS)), file=sys.stderr)
            return 2
        try:
            sets = {s: load_set(os.path.join(args.data, s, 'HR'), scale, args.limit) for s in SETS}
        except (FileNotFoundError, utils.ImageError) as e:
            print('error: %s' % e, file=sys.stderr)
            return 2
        methods, generators = list(METHODS[scale]), {}
        try:
            for m in methods[1:]:
                generators[m] = sr.Generator(scale, checkpoints.find_checkpoint(args.modelpath, m))
        except checkpoints.CheckpointError as e:
            if scale == 4:
                print('error: %s' % e, file=sys.stderr)
                return 2
            print('note: x%d skipped: %s' % (scale, e), file=sys.stderr)
            continue
        blends = {}
        if scale == 4 and not args.no_dial:
            frsr, natsr = checkpoints.find_checkpoint(args.modelpath, 'FRSR'), checkpoints.find_checkpoint(args.modelpath, 'NatSR')
            blends = {blend_name(a): sr.Generator(4, weights=checkpoints.blend_weights(frsr, natsr, a)) for a in BLENDS}
            generators.update(blends)
        print('device: %s' % next(iter(generators.values())).device, file=sys.stderr)
        for s, items in sets.items():
            # the dial's points are measured where its table and plot use them: BSD100
            on = methods + (list(blends) if s == 'BSD100' else [])
            set_rows, outputs = evaluate(items, s, on, scale, generators, not args.no_niqe and s == 'BSD100')
            rows += set_rows
            if scale == 4:
                for name, hr, _ in items:
                    outputs[name]['HR'] = hr
                images[s] = outputs
        if scale == 4:
            images['photo'] = photo_crops(methods, generators)
        report.append(table([r for r in rows if r['scale'] == scale], scale, methods,
                            {s: len(v) for s, v in sets.items()}))
        if blends:
            report.append(dial_table([r for r in rows if r['scale'] == 4]))
        for g in generators.values():
            g.close()
    os.makedirs(args.out, exist_ok=True)
    text = '\n'.join(report)
    with utils.atomic_path(os.path.join(args.out, 'quality.md')) as tmp, open(tmp, 'w') as f:
        f.write(text)
    columns = ['method', 'scale', 'set', 'image'] + list(metrics.METRICS)
    with utils.atomic_path(os.path.join(args.out, 'per_image.csv')) as tmp, open(tmp, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([('%.6g' % r[c]) if isinstance(r[c], float) else r[c] for c in columns])
    if not args.no_niqe:
        plot_perception_distortion(rows, os.path.join(args.out, 'perception_distortion.png'))
    if images:   # the crops are x4's
        plot_crops(images, METHODS[4], os.path.join(args.out, 'crops.png'))
    print(text)
    print('written: %s' % ', '.join(sorted(os.listdir(args.out))))
    return 0


if __name__ == '__main__':
    sys.exit(main())
