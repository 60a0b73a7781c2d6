"""Quality benchmark of the paper's tables: bicubic, FRSR and NatSR at x4, and bicubic, FRSR_x2 and
FRSR_x3 at x2 / x3, on Set5, Set14, BSD100 and the validation set DIV2K-val; the NatSR dial, both ways.

    python bench/quality.py                       # data from --data's default, models from Model/
    python bench/quality.py --data DIR --modelpath Model --out bench_out --limit 0 --scales 4,2,3
    python bench/quality.py --sets DIV2K-val --scales 4 --checkpoints A,B,C   # choose among checkpoints
    python bench/quality.py --sets BSD100 --scales 4 --jpeg 60,75,90          # JPEG-compressed LR as well

LR = MATLAB bicubic imresize(modcrop(HR, s), 1/s) of the uint8 HR (computed, as the authors did with
MATLAB; bit for bit the same). A scale whose model is missing from --modelpath is skipped with a note.
DIV2K-val (`val` for short) is DIV2K/HR under --data: the three DIV2K images 0802, 0803, 0806, in none
of the benchmarks and not in the training pool; checkpoints are chosen on it (--checkpoints), never on
a benchmark.

Every metric of metrics.METRICS is measured for every method, and for HR itself where a metric needs no
reference (NIQE, the image's own lattice). Writes to --out:
- quality.md: per scale and set, per method: PSNR / SSIM (Y, `scale` pixels shaved, beside the paper's),
  LPIPS (beside the SPSR paper's table), tone (mean Y offset), chroma noise, own lattice at period
  `scale` and 2 x `scale` (HR's own figure in the HR row), false detail, NIQE and grid; the reference
  figures; both dials' tables; the tone of every DIV2K-val image;
- perception_distortion.png (BSD100) and perception_distortion_DIV2K-val.png: PSNR against NIQE and
  against LPIPS, one point per method, a curve per dial;
- crops.png: side-by-side x4 crops of textured patches; crops_flat.png: a flat area next to fine
  structure (DIV2K 0806's sky between palm fronds) and its detail (image minus a blur) x4;
- per_image.csv: every score;
- with --jpeg Q1,Q2,...: every set also with its LR saved by Pillow as JPEG at each quality ('BSD100 q60',
  ...), a table per set of PSNR (gain over bicubic), LPIPS and the own lattice at period 8 x scale (the
  JPEG blocks, magnified) per method and quality, and crops_jpeg.png: DIV2K-val 0803 at the lowest
  quality, every method at 3x and 8x. The JPEG-robust models (FRSR_jpeg) join the x4 methods where
  --modelpath holds them.

The dial, a = 0 (FRSR) .. 1 (NatSR): `NatSR@a` blends the weights ((1 - a) FRSR + a NatSR, test.py
--blend a); `mix@a` blends the outputs, round((1 - a) FRSR(x) + a NatSR(x)) of the two uint8 images.
Grid (metrics.grid): energy of the detail a method adds to FRSR at the lattice of period 2 x scale,
over the same energy of real detail (HR - FRSR); the first shipped NatSR, whose dots were plain to
see, scored 9.9 on BSD100.
"""
import argparse
import csv
import io
import os
import sys

import numpy as np
from tqdm import tqdm

if __package__ in (None, ''):  # run as a script: the project root first on sys.path (docs/layout.md)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import utils
from natsr.evaluation import metrics
from natsr.imresize import imresize
from natsr.process import tflog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAL = 'DIV2K-val'
SETS = ('Set5', 'Set14', 'BSD100', VAL)
FOLDERS = {VAL: os.path.join('DIV2K', 'HR')}     # under --data; a benchmark's is <name>/HR
ALIASES = {'val': VAL}
DIAL_SETS = ('BSD100', VAL)                      # where the dial is measured
METHODS = {4: ('bicubic', 'FRSR', 'NatSR'), 2: ('bicubic', 'FRSR_x2'), 3: ('bicubic', 'FRSR_x3')}
ROBUST = {4: ('FRSR_jpeg',)}        # the JPEG-robust models, scored where --modelpath holds them
BLENDS = (0.25, 0.5, 0.75)          # the dial's inner points (0 and 1 are FRSR and NatSR)
# which images chose each shipped model: its column of that set is not a held-out figure
CHOSEN_ON = {'NatSR': VAL, 'FRSR': VAL, 'FRSR_x2': VAL, 'FRSR_x3': VAL, 'FRSR_jpeg': VAL}
# a median over images for ratios (one image with almost no flat area or lattice must not decide)
MEDIAN = ('chroma', 'lattice', 'lattice2', 'lattice8', 'blocks', 'false_detail', 'grid')
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
# LPIPS / PSNR at x4 from the SPSR paper's table (Ma et al., CVPR 2020), on the authors' released results
SPSR_TABLE = {'NatSR': {'Set5': (0.0939, 30.99), 'BSD100': (0.2114, 26.45), 'Urban100': (0.1500, 25.46)},
              'ESRGAN': {'Set5': (0.0748, 30.45), 'BSD100': (0.1614, 25.32), 'Urban100': (0.1229, 24.36)}}
CROPS = (('Set14', 'baboon', 0.55, 0.35), ('BSD100', '253027', 0.5, 0.5), ('photo', 'chelsea', 0.45, 0.55),
         ('Set5', 'butterfly', 0.5, 0.45))
FLAT_CROPS = ((VAL, '0806', 1150, 730, 96),)     # (set, image, x, y, size): sky between the palm fronds


def blend_name(a):
    return 'NatSR@%g' % a


def mix_name(a):
    return 'mix@%g' % a


def load_set(folder, scale, limit):
    """[(name, HR uint8 RGB, LR uint8 RGB)] of a benchmark folder; gray HR as 3 equal channels."""
    out = []
    for path in utils.list_images(folder)[:limit or None]:
        hr = utils.modcrop(utils.read_rgb8(path), scale)
        out.append((os.path.splitext(os.path.basename(path))[0], hr, imresize(hr, 1.0 / scale)))
    return out


def jpeg_lr(lr, quality):
    """The LR image `lr` saved by Pillow as JPEG at `quality` (its defaults: 4:2:0 chroma) and decoded."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(lr).save(buf, 'JPEG', quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert('RGB'))


def jpeg_set(name, quality):
    return '%s q%d' % (name, quality)


def clean_set(name):
    """The set a JPEG variant's LR came from: BSD100 for 'BSD100 q60'."""
    return name.split(' q')[0]


def with_jpeg(sets, qualities):
    """`sets` ({name: items}) and after each its variants of --jpeg: the same HR, the LR saved as JPEG
    at each quality (highest first), named 'BSD100 q90' and so on."""
    out = {}
    for name, items in sets.items():
        out[name] = items
        for q in sorted(qualities, reverse=True):
            out[jpeg_set(name, q)] = [(n, hr, jpeg_lr(lr, q)) for n, hr, lr in items]
    return out


def parse_qualities(text):
    """The qualities of --jpeg (e.g. 60,75,90); ValueError for one outside 1..100."""
    try:
        qualities = sorted({int(q) for q in text.split(',') if q.strip()})
    except ValueError:
        qualities = []
    if not qualities or not all(1 <= q <= 100 for q in qualities):
        raise ValueError('--jpeg: give comma-separated JPEG qualities in 1..100, e.g. 60,75,90, not %r' % text)
    return qualities


def jpeg_table(rows, scale, sets, methods, qualities):
    """Per set with JPEG variants: PSNR (gain over bicubic), LPIPS, the lattice at period 8 x scale and the
    blocks measure of every method, one row per LR (clean, then each quality); HR's two in the head."""
    parts = []
    for name in [s for s in sets if jpeg_set(s, qualities[0]) in sets]:
        hr = [fmt(summary(rows, 'HR', name, k), '%.2f') for k in ('lattice8', 'blocks')]
        lines = ['#### x%d %s, JPEG LR: PSNR-Y dB (gain over bicubic) / LPIPS / lattice p%d / blocks (HR: %s / %s)'
                 % (scale, name, 8 * scale, hr[0], hr[1]), '',
                 '| LR | %s |' % ' | '.join(methods), '|' + '---|' * (len(methods) + 1)]
        for label, s in [('clean', name)] + [('JPEG q%d' % q, jpeg_set(name, q)) for q in sorted(qualities, reverse=True)]:
            base = summary(rows, 'bicubic', s, 'psnr')
            cells = []
            for m in methods:
                p = summary(rows, m, s, 'psnr')
                gain = '' if m == 'bicubic' else ' (%+.2f)' % (p - base)
                cells.append('%s%s / %s / %s / %s' % (fmt(p, '%.2f'), gain, fmt(summary(rows, m, s, 'lpips'), '%.4f'),
                                                      fmt(summary(rows, m, s, 'lattice8'), '%.2f'),
                                                      fmt(summary(rows, m, s, 'blocks'), '%.2f')))
            lines.append('| %s | %s |' % (label, ' | '.join(cells)))
        parts.append('\n'.join(lines) + '\n')
    return '\n'.join(parts)


def upscale(method, lr, scale, generators):
    if method == 'bicubic':
        return utils.to_uint(np.clip(imresize(utils.to_float(lr), scale), 0, 1))
    return utils.to_uint(np.clip(generators[method](utils.to_float(lr)), 0, 1))


def mix(fidelity, perceptual, a):
    """The output dial: round((1 - a) fidelity + a perceptual) of two uint8 images."""
    return np.clip(np.floor((1 - a) * fidelity.astype(np.float64) + a * perceptual + 0.5), 0, 255).astype(np.uint8)


def evaluate(items, set_name, methods, scale, generators, skip=(), base='FRSR', mixes=()):
    """Per-image score rows of `methods`, of the output blends `mixes` (a values: of `base` and NatSR)
    and of HR on one set, and {name: {method: SR}}. The grid of a method is measured against `base`'s
    output (the model it was fine-tuned from), when `base` ran first."""
    rows, outputs = [], {}
    order = list(methods) + [mix_name(a) for a in mixes]
    # image by image, so that HR's LPIPS features are computed once for all methods
    for name, hr, lr in tqdm(items, desc='x%d %s' % (scale, set_name), file=sys.stderr, leave=False):
        first = outputs.setdefault(name, {})
        for method in order:
            out = (mix(first[base], first['NatSR'], mixes[order.index(method) - len(methods)])
                   if method.startswith('mix@') else upscale(method, lr, scale, generators))
            first[method] = out
            own = first.get(base) if method not in (base, 'bicubic') else None
            rows.append(dict(method=method, scale=scale, set=set_name, image=name,
                             **scores(out, scale, hr, own, skip)))
    rows += [dict(method='HR', scale=scale, set=set_name, image=name, **scores(hr, scale, skip=skip))
             for name, hr, _ in items]
    return rows, outputs


def scores(sr, scale, hr=None, base=None, skip=()):
    """{name: value} of every metric of metrics.METRICS not in `skip`: NaN where an input it needs
    (HR, the base model's output) is not given or the image is one it cannot measure."""
    given = {'hr': hr, 'base': base}
    out = {}
    for name, m in metrics.METRICS.items():
        out[name] = np.nan
        if name not in skip and all(given[k] is not None for k in m.needs):
            try:
                out[name] = metrics.measure(name, sr, scale, hr, base)
            except ValueError as e:       # too small for NIQE, no flat area, ...
                print('note: %s: %s' % (name, e), file=sys.stderr)
    return out


def summary(rows, method, set_name, key, how=None):
    """Mean (median for the ratios of MEDIAN) of `key` over the images of one method and set."""
    how = how or (np.median if key in MEDIAN else np.mean)
    vals = [r[key] for r in rows if r['method'] == method and r['set'] == set_name and np.isfinite(r[key])]
    return float(how(vals)) if vals else np.nan


def fmt(value, pattern):
    return pattern % value if np.isfinite(value) else '-'


COLUMNS = (('lpips', '%.4f'), ('tone', '%+.2f'), ('chroma', '%.3f'), ('lattice', '%.2f'), ('lattice2', '%.2f'),
           ('lattice8', '%.2f'), ('blocks', '%.2f'),
           ('false_detail', '%.3f'), ('niqe', '%.2f'), ('grid', '%.2f'))


def set_table(rows, scale, set_name, methods, count):
    """The Markdown table of one scale and set: every metric per method, the published figures beside."""
    paper = PAPER.get(scale, {})
    heads = ['PSNR / SSIM (paper)', 'LPIPS (SPSR table)', 'dY', 'chroma', 'lattice p%d' % scale,
             'lattice p%d' % (2 * scale), 'lattice p%d' % (8 * scale), 'blocks', 'false detail', 'NIQE (paper)', 'grid']
    lines = ['#### x%d %s (%d images)' % (scale, set_name, count), '', '| method | %s |' % ' | '.join(heads),
             '|' + '---|' * (len(heads) + 1)]
    for method in list(methods) + ['HR']:
        p = paper.get(method, {})
        if method == 'HR':
            cells = ['-']
        else:
            ref = p.get(set_name)
            cells = ['%.2f / %.4f (%s)' % (summary(rows, method, set_name, 'psnr'),
                                           summary(rows, method, set_name, 'ssim'), '%.2f / %.4f' % ref if ref else '-')]
        for key, pattern in COLUMNS:
            cell = fmt(summary(rows, method, set_name, key), pattern)
            ref = SPSR_TABLE.get(method, {}).get(set_name) if key == 'lpips' and scale == 4 else None
            if key == 'lpips' and ref:
                cell += ' (%.4f)' % ref[0]
            if key == 'niqe' and set_name == 'BSD100' and 'niqe' in p:
                cell += ' (%.2f)' % p['niqe']
            cells.append(cell)
        note = ' (chosen on %s: not held out)' % set_name if CHOSEN_ON.get(method) == clean_set(set_name) else ''
        lines.append('| %s%s | %s |' % (method, note, ' | '.join(cells)))
    return '\n'.join(lines) + '\n'


def table(rows, scale, methods, counts):
    """Every set's table of one scale, and what the columns mean."""
    parts = ['### x%d' % scale, '']
    parts += [set_table(rows, scale, s, methods, n) for s, n in counts.items()]
    parts.append(
        'PSNR / SSIM on the BT.601 Y channel with %d pixels shaved (means); LPIPS: AlexNet v0.1, whole RGB '
        'image (mean); dY: mean Y offset against HR, levels (mean); chroma: high-pass Cb/Cr RMS over HR\'s; '
        'lattice pN: the output\'s own spectrum at the period-N lattice over its 5x5 spectral neighbourhood '
        '(HR row: HR\'s own; p%d: a JPEG input\'s 8 x 8 blocks, magnified); blocks: the mean Y step across the borders of those blocks over its '
        'median over the phases (1: none); false detail: high-pass Y energy in HR\'s flat areas over HR\'s (HR = 1); NIQE '
        'with the same shave (mean; lower is better); grid: detail added to FRSR at the period-%d lattice '
        'over real detail\'s. Ratios are medians over images. Bracketed: published figures.\n'
        % (scale, 8 * scale, 2 * scale))
    return '\n'.join(parts)


def reference_table():
    """The SPSR paper's LPIPS / PSNR figures (x4), Urban100 included (not in ../shared/data)."""
    sets = ('Set5', 'BSD100', 'Urban100')
    lines = ['### Reference: LPIPS / PSNR x4 of the SPSR paper\'s table (authors\' released results)', '',
             '| method | %s |' % ' | '.join(sets), '|---|---|---|---|']
    for method, figs in SPSR_TABLE.items():
        lines.append('| %s | %s |' % (method, ' | '.join('%.4f / %.2f' % figs[s] for s in sets)))
    return '\n'.join(lines) + '\n'


def dial_table(rows, set_name):
    """Both dials along a = 0 (FRSR) .. 1 (NatSR) on one set: PSNR, SSIM, LPIPS, NIQE, tone, lattice."""
    lines = ['### The dial on %s x4: weight blend (NatSR@a, test.py --blend a) and output blend (mix@a)'
             % set_name, '',
             '| a | dial | PSNR / SSIM | LPIPS | NIQE | dY | lattice p4 | false detail | grid |',
             '|---|---|---|---|---|---|---|---|---|']
    for dial in ('weights', 'outputs'):
        for a, method in dial_points(rows, set_name, dial):
            lines.append('| %g | %s | %.2f / %.4f | %s | %s | %s | %s | %s | %s |' % (
                a, dial, summary(rows, method, set_name, 'psnr'), summary(rows, method, set_name, 'ssim'),
                fmt(summary(rows, method, set_name, 'lpips'), '%.4f'), fmt(summary(rows, method, set_name, 'niqe'), '%.2f'),
                fmt(summary(rows, method, set_name, 'tone'), '%+.2f'), fmt(summary(rows, method, set_name, 'lattice'), '%.2f'),
                fmt(summary(rows, method, set_name, 'false_detail'), '%.3f'),
                fmt(summary(rows, method, set_name, 'grid'), '%.2f') if a else '0'))
    return '\n'.join(lines) + '\n'


def tone_table(rows, set_name, scale=4):
    """The mean Y offset against HR of every image of one set, per method."""
    methods = list(dict.fromkeys(r['method'] for r in rows if r['set'] == set_name and r['method'] != 'HR'))
    images = list(dict.fromkeys(r['image'] for r in rows if r['set'] == set_name))
    value = {(r['method'], r['image']): r['tone'] for r in rows if r['set'] == set_name}
    lines = ['### Tone per image, %s x%d: mean Y of the output minus HR\'s (levels)' % (set_name, scale), '',
             '| method | %s | mean |' % ' | '.join(images), '|' + '---|' * (len(images) + 2)]
    for m in methods:
        lines.append('| %s | %s | %s |' % (m, ' | '.join(fmt(value[(m, i)], '%+.2f') for i in images),
                                           fmt(summary(rows, m, set_name, 'tone'), '%+.2f')))
    return '\n'.join(lines) + '\n'


def dial_points(rows, set_name, dial='weights'):
    present = {r['method'] for r in rows if r['scale'] == 4 and r['set'] == set_name}
    name = blend_name if dial == 'weights' else mix_name
    points = [(0.0, 'FRSR')] + [(a, name(a)) for a in BLENDS] + [(1.0, 'NatSR')]
    return [(a, m) for a, m in points if m in present]


def plot_perception_distortion(rows, path, set_name='BSD100'):
    """Two panels, PSNR against NIQE and against LPIPS on one set at x4: the methods, both dials."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2), dpi=120)
    x4 = [r for r in rows if r['scale'] == 4]
    for ax, key, label in zip(axes, ('niqe', 'lpips'), ('NIQE (lower: more natural)', 'LPIPS (lower: closer)')):
        for dial, color in (('weights', 'tab:blue'), ('outputs', 'tab:orange')):
            points = dial_points(x4, set_name, dial)
            if len(points) <= 2:
                continue
            xs = [summary(x4, m, set_name, key) for _, m in points]
            ys = [summary(x4, m, set_name, 'psnr') for _, m in points]
            ax.plot(xs, ys, '-', color=color, alpha=0.6, zorder=1, label='dial: blend of the %s' % dial)
            for (a, _), x, y in zip(points, xs, ys):
                if 0 < a < 1:
                    ax.scatter(x, y, s=18, color=color, zorder=2)
                    ax.annotate('a=%g' % a, (x, y), textcoords='offset points', xytext=(5, 3), fontsize=7)
        for method in METHODS[4]:
            x, y = summary(x4, method, set_name, key), summary(x4, method, set_name, 'psnr')
            if np.isfinite(x) and np.isfinite(y):
                ax.scatter(x, y, s=40, zorder=3)
                ax.annotate(method, (x, y), textcoords='offset points', xytext=(6, -10))
        hr = summary(x4, 'HR', set_name, key)
        if key == 'niqe' and np.isfinite(hr):
            ax.axvline(hr, color='gray', linestyle='--', label='HR NIQE')
        ax.legend(loc='lower right', fontsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel('PSNR on Y, dB (higher: more faithful)')
        ax.set_title('Perception-distortion, %s x4' % set_name)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path):
    with utils.atomic_path(path) as tmp:
        fig.savefig(tmp, format='png')
    import matplotlib.pyplot as plt
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
    save_figure(fig, path)


def plot_flat_crops(images, methods, path):
    """A flat area next to fine structure (FLAT_CROPS), per method and HR: the crop, and below it its
    detail (Y minus a 1.5 px Gaussian blur) x4 around mid-grey."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    picks = [c for c in FLAT_CROPS if c[1] in images.get(c[0], {})]
    if not picks:
        return False
    cols = [m for m in methods if all(m in images[s][n] for s, n, *_ in picks)] + ['HR']
    fig, axes = plt.subplots(2 * len(picks), len(cols), figsize=(2.2 * len(cols), 4.5 * len(picks)), dpi=120,
                             squeeze=False)
    for row, (s, name, x, y, size) in enumerate(picks):
        h, w = images[s][name]['HR'].shape[:2]
        size = min(size, h, w)
        y, x = min(y, h - size), min(x, w - size)          # a smaller image: its bottom-right corner
        for col, method in enumerate(cols):
            crop = images[s][name][method][y:y + size, x:x + size]
            detail = metrics.high_pass(metrics.rgb_to_y(crop), metrics.DETAIL_SIGMA)
            for k, (img, kw) in enumerate(((crop, {}), (np.clip(128 + 4 * detail, 0, 255), dict(cmap='gray', vmin=0,
                                                                                                   vmax=255)))):
                ax = axes[2 * row + k][col]
                ax.imshow(img.astype(np.uint8), interpolation='nearest', **kw)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title('%s%s' % (method, ' detail x4' if k else ''), fontsize=8)
            if col == 0:
                axes[2 * row][0].set_ylabel('%s %s (%d, %d)' % (s, name, x, y))
    fig.tight_layout()
    save_figure(fig, path)
    return True


JPEG_CROP = ('0803', 0.42, 0.3)       # DIV2K-val 0803 (image, fy, fx): where the JPEG crops are cut


def jpeg_crop_set(sets):
    """The set whose crops crops_jpeg.png shows: DIV2K-val (else the first set) at the lowest --jpeg quality."""
    variants = [s for s in sets if s != clean_set(s)]
    if not variants:
        return None
    lowest = min(variants, key=lambda s: int(s.rsplit(' q', 1)[1]))
    val = jpeg_set(VAL, int(lowest.rsplit(' q', 1)[1]))
    return val if val in variants else lowest


def plot_jpeg_crops(images, methods, set_name, path):
    """One image of a JPEG set (JPEG_CROP where it is there): its JPEG LR (nearest, x scale), every
    method and HR, cut at the same place, shown at 3x (a 128-pixel crop) and 8x (48 pixels)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    outputs = images[set_name]
    name, fy, fx = JPEG_CROP if JPEG_CROP[0] in outputs else (sorted(outputs)[0], 0.5, 0.5)
    hr = outputs[name]['HR']
    scale = hr.shape[0] // outputs[name]['LR'].shape[0]
    cols = ['LR'] + [m for m in methods if m in outputs[name]] + ['HR']
    fig, axes = plt.subplots(2, len(cols), figsize=(2.6 * len(cols), 5.6), dpi=150, squeeze=False)
    for row, (size, zoom) in enumerate(((128, 3), (48, 8))):
        size = min(size, *hr.shape[:2]) // scale * scale
        y0 = int((hr.shape[0] - size) * fy) // scale * scale
        x0 = int((hr.shape[1] - size) * fx) // scale * scale
        for col, m in enumerate(cols):
            img = outputs[name][m]
            if m == 'LR':
                img = np.repeat(np.repeat(img, scale, 0), scale, 1)
            crop = img[y0:y0 + size, x0:x0 + size]
            ax = axes[row][col]
            ax.imshow(np.repeat(np.repeat(crop, zoom, 0), zoom, 1), interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title('%s %dx' % ('JPEG LR' if m == 'LR' else m, zoom), fontsize=9)
        axes[row][0].set_ylabel('%s %s (%d, %d)' % (set_name, name, x0, y0), fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def photo_crops(methods, generators, scale=4):
    """scikit-image's bundled chelsea (the cat's fur, as in `python test.py`'s default job)."""
    import skimage.data
    hr = utils.modcrop(skimage.data.chelsea(), scale)
    lr = imresize(hr, 1.0 / scale)
    return {'chelsea': dict({m: upscale(m, lr, scale, generators) for m in methods}, HR=hr)}


def parse_sets(text):
    """The set names of --sets (`val` for DIV2K-val); ValueError naming an unknown one."""
    names = [ALIASES.get(s.strip(), s.strip()) for s in text.split(',') if s.strip()]
    unknown = [s for s in names if s not in SETS]
    if unknown or not names:
        raise ValueError('--sets: unknown set %r (of %s, or val)' % ((unknown or [text])[0], ', '.join(SETS)))
    return list(dict.fromkeys(names))


def checkpoint_labels(prefixes):
    """{label: prefix} of --checkpoints: each checkpoint's file name, or its whole path where two share one;
    ValueError for a prefix without its .index file."""
    missing = [p for p in prefixes if not os.path.isfile(p + '.index')]
    if missing:
        raise ValueError('--checkpoints: %s.index not found (give checkpoint prefixes, e.g. '
                         'DIR/model.ckpt-1000)' % missing[0])
    names = [os.path.basename(p) for p in prefixes]
    return {(n if names.count(n) == 1 else p): p for n, p in zip(names, prefixes)}


def write_outputs(out, report, rows):
    """quality.md and per_image.csv under `out`."""
    os.makedirs(out, exist_ok=True)
    with utils.atomic_path(os.path.join(out, 'quality.md')) as tmp, open(tmp, 'w') as f:
        f.write('\n'.join(report))
    columns = ['method', 'scale', 'set', 'image'] + list(metrics.METRICS)
    with utils.atomic_path(os.path.join(out, 'per_image.csv')) as tmp, open(tmp, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([('%.6g' % r[c]) if isinstance(r[c], float) else r[c] for c in columns])


def main(argv=None):
    p = argparse.ArgumentParser(description=' '.join(__doc__.split('\n\n')[0].split()))
    p.add_argument('--data', default=os.path.join(ROOT, '..', 'shared', 'data'),
                   help='folder holding Set5/HR, Set14/HR, BSD100/HR, DIV2K/HR (default: ../shared/data)')
    p.add_argument('--modelpath', default=os.path.join(ROOT, 'Model'),
                   help='checkpoints FRSR, NatSR, FRSR_x2, FRSR_x3 (default: Model)')
    p.add_argument('--out', default='bench_out', help='output folder (default: bench_out)')
    p.add_argument('--limit', type=int, default=0, help='at most N images per set (0: all)')
    p.add_argument('--scales', default='4,2,3', help='scales to benchmark (default: 4,2,3; one with --checkpoints)')
    p.add_argument('--sets', default=None,
                   help='comma-separated sets, of %s (val: DIV2K-val; default: all; with --checkpoints: '
                        'DIV2K-val)' % ', '.join(SETS))
    p.add_argument('--checkpoints', default=None, metavar='PREFIXES',
                   help='comma-separated checkpoint prefixes of one model at the one --scales scale: score '
                        'these (and bicubic) instead of the shipped models, to choose among them')
    p.add_argument('--no_niqe', action='store_true', help='skip NIQE (faster)')
    p.add_argument('--no_dial', action='store_true', help='skip the FRSR / NatSR blends')
    p.add_argument('--jpeg', default=None, metavar='Q1,Q2,...',
                   help='also score every set with its LR saved as JPEG (Pillow) at these qualities, e.g. 60,75,90: '
                        'a table per set of PSNR (gain over bicubic), LPIPS and the lattice p(8 x scale), and '
                        'crops_jpeg.png (the lowest quality)')
    args = p.parse_args(argv)
    scales = [int(s) for s in args.scales.split(',')]
    try:
        sets_wanted = parse_sets(args.sets or (VAL if args.checkpoints else ','.join(SETS)))
        chosen = checkpoint_labels([c for c in args.checkpoints.split(',') if c]) if args.checkpoints else None
        if chosen is not None and len(scales) != 1:
            raise ValueError('--checkpoints: give one scale (--scales 4, say), not %s' % args.scales)
        bad = [s for s in scales if s not in METHODS and chosen is None]
        if bad:
            raise ValueError('--scales: %d is not one of %s' % (bad[0], sorted(METHODS)))
        qualities = parse_qualities(args.jpeg) if args.jpeg else []
        metrics.check_ready(metrics.METRICS)    # the LPIPS weights, before any work
    except ValueError as e:
        print('error: %s' % e, file=sys.stderr)
        return 2
    tflog.init(graph=False)   # sr.Generator builds its own graphs
    from natsr import checkpoints
    from natsr.inference import sr
    skip = ('niqe',) if args.no_niqe else ()
    rows, report, images = [], [], {}
    for scale in scales:
        try:
            sets = {s: load_set(os.path.join(args.data, FOLDERS.get(s, os.path.join(s, 'HR'))), scale, args.limit)
                    for s in sets_wanted}
            sets = with_jpeg(sets, qualities) if qualities else sets
        except (FileNotFoundError, utils.ImageError) as e:
            print('error: %s' % e, file=sys.stderr)
            return 2
        generators = {}
        if chosen is not None:
            methods = ['bicubic'] + list(chosen)
            generators = {label: sr.Generator(scale, prefix) for label, prefix in chosen.items()}
        else:
            methods = list(METHODS[scale])
            try:
                for m in methods[1:]:
                    generators[m] = sr.Generator(scale, checkpoints.find_checkpoint(args.modelpath, m))
            except checkpoints.CheckpointError as e:
                if scale == 4:
                    print('error: %s' % e, file=sys.stderr)
                    return 2
                print('note: x%d skipped: %s' % (scale, e), file=sys.stderr)
                continue
            for m in ROBUST.get(scale, ()):
                try:
                    generators[m] = sr.Generator(scale, checkpoints.find_checkpoint(args.modelpath, m))
                    methods.append(m)
                except checkpoints.CheckpointError as e:
                    print('note: %s left out: %s' % (m, e), file=sys.stderr)
        blends = {}
        if scale == 4 and chosen is None and not args.no_dial:
            frsr, natsr = checkpoints.find_checkpoint(args.modelpath, 'FRSR'), checkpoints.find_checkpoint(args.modelpath, 'NatSR')
            blends = {blend_name(a): sr.Generator(4, weights=checkpoints.blend_weights(frsr, natsr, a)) for a in BLENDS}
            generators.update(blends)
        print('device: %s' % next(iter(generators.values())).device, file=sys.stderr)
        for s, items in sets.items():
            dial = bool(blends) and s in DIAL_SETS
            set_rows, outputs = evaluate(items, s, methods + (list(blends) if dial else []), scale, generators,
                                         skip, base='FRSR' if chosen is None else None,
                                         mixes=BLENDS if dial else ())
            rows += set_rows
            if scale == 4 and chosen is None and (s == clean_set(s) or s == jpeg_crop_set(sets)):
                for name, hr, lr in items:
                    outputs[name]['HR'], outputs[name]['LR'] = hr, lr
                images[s] = outputs
        if scale == 4 and chosen is None:
            images['photo'] = photo_crops(methods, generators)
            methods_x4 = list(methods)
        this = [r for r in rows if r['scale'] == scale]
        if qualities:
            report.append(jpeg_table(this, scale, sets, methods, qualities))
        report.append(table(this, scale, methods, {s: len(v) for s, v in sets.items()}))
        for s in DIAL_SETS:
            if blends and s in sets:
                report.append(dial_table(this, s))
        if VAL in sets:
            report.append(tone_table(this, VAL, scale))
        for g in generators.values():
            g.close()
    if 4 in scales and chosen is None:
        report.append(reference_table())
    write_outputs(args.out, report, rows)
    if not args.no_niqe and chosen is None:
        for s in DIAL_SETS:
            if s in sets_wanted and 4 in scales:
                plot_perception_distortion(rows, os.path.join(args.out, 'perception_distortion%s.png'
                                                              % ('' if s == 'BSD100' else '_' + s)), s)
    if images:   # the crops are x4's
        shown = list(METHODS[4]) + [m for m in (blend_name(0.5), mix_name(0.5)) if any(
            m in o for s in images.values() for o in s.values())]
        plot_crops(images, METHODS[4], os.path.join(args.out, 'crops.png'))
        plot_flat_crops(images, shown, os.path.join(args.out, 'crops_flat.png'))
        if jpeg_crop_set(images):
            plot_jpeg_crops(images, methods_x4, jpeg_crop_set(images), os.path.join(args.out, 'crops_jpeg.png'))
    print('\n'.join(report))
    print('written: %s' % ', '.join(sorted(os.listdir(args.out))))
    return 0


if __name__ == '__main__':
    sys.exit(main())
