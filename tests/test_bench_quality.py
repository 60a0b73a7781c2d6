"""bench/quality.py end to end on one image per set, with random-weight FRSR / NatSR checkpoints."""
import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, shared_path
import utils

QUALITY = os.path.join(ROOT, 'bench', 'quality.py')


def bench_data(tmp_path):
    """One image per benchmark, and a 240x240 corner of DIV2K 0806 as DIV2K-val."""
    data = tmp_path / 'data'
    for s, name in (('Set5', 'bird.bmp'), ('Set14', 'comic.bmp'), ('BSD100', '3096.jpg')):
        (data / s / 'HR').mkdir(parents=True)
        shutil.copy(shared_path('data', s, 'HR', name), data / s / 'HR' / name)
    (data / 'DIV2K' / 'HR').mkdir(parents=True)
    div2k = utils.read_rgb8(shared_path('data', 'DIV2K', 'HR', '0806.png'))
    utils.save_image(str(data / 'DIV2K' / 'HR' / '0806.png'), div2k[730:970, 1000:1240])
    return data


def random_models(tmp_path, models=(('FRSR', 4, 0), ('NatSR', 4, 1), ('FRSR_x2', 2, 0))):
    from natsr.inference import sr
    for name, scale, seed in models:
        g = sr.Generator(scale, seed=seed)
        g.save(str(tmp_path / 'Model' / name))
        g.close()
    return tmp_path / 'Model'


def run(*args):
    r = subprocess.run([sys.executable, QUALITY] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=900)
    return r


def test_quality_benchmark_writes_table_and_pictures(tmp_path):
    data, model = bench_data(tmp_path), random_models(tmp_path)
    out = tmp_path / 'out'
    r = run('--data', data, '--modelpath', model, '--out', out)
    if r.returncode == 2 and 'LPIPS needs' in r.stderr:
        pytest.skip(r.stderr.strip())
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'x3 skipped' in r.stderr and 'FRSR_x3' in r.stderr          # no FRSR_x3 checkpoint given
    table = (out / 'quality.md').read_text()
    for head in ('### x4', '### x2', '### The dial on BSD100', '### The dial on DIV2K-val', '#### x4 DIV2K-val',
                 '### Tone per image, DIV2K-val', '### Reference: LPIPS'):
        assert head in table
    assert '### x3' not in table
    for method in ('| bicubic |', '| FRSR |', '| NatSR |', '| HR |', '| FRSR_x2 |', '| 0.5 | weights |',
                   '| 0.5 | outputs |', '| NatSR (chosen on DIV2K-val: not held out) |',
                   '| FRSR (chosen on DIV2K-val: not held out) |'):
        assert method in table
    assert 'chosen on BSD100' not in table                   # the benchmarks' columns are held out
    assert '(28.42 / 0.8104)' in table and '(3.80)' in table and '(33.66 / 0.9299)' in table  # the paper's
    assert '(0.2114)' in table and '0.1229 / 24.36' in table                                # the SPSR table's
    rows = list(csv.DictReader(open(out / 'per_image.csv')))
    psnr = {(r['method'], r['scale'], r['set']): float(r['psnr']) for r in rows}
    assert 29.7 < psnr[('bicubic', '4', 'Set5')] < 30.7    # bicubic on bird x4: 30.18 dB
    assert psnr[('bicubic', '2', 'Set5')] > psnr[('bicubic', '4', 'Set5')] + 3
    # each scale's table holds that scale's figures alone (the bicubic rows of x4 and x2 share a name)
    x2_table = table[table.index('### x2'):]
    assert '| bicubic | %.2f / ' % psnr[('bicubic', '2', 'Set5')] in x2_table
    assert '| bicubic | %.2f / ' % psnr[('bicubic', '4', 'Set5')] in table[:table.index('### x2')]
    assert psnr[('FRSR', '4', 'Set5')] < psnr[('bicubic', '4', 'Set5')]  # random weights
    x4 = {(r['method'], r['set']): r for r in rows if r['scale'] == '4'}
    assert np.isnan(float(x4['FRSR', 'BSD100']['grid'])) and np.isfinite(float(x4['NatSR', 'BSD100']['grid']))
    for s in ('Set5', 'BSD100', 'DIV2K-val'):
        for m in ('bicubic', 'FRSR', 'NatSR'):
            for key in ('lpips', 'tone', 'chroma', 'lattice', 'lattice2', 'false_detail', 'niqe'):
                assert np.isfinite(float(x4[m, s][key])), (m, s, key)
        # HR: its own lattice and NIQE, no reference-based score; false detail is 1 by definition
        assert np.isfinite(float(x4['HR', s]['lattice'])) and np.isnan(float(x4['HR', s]['lpips']))
    for s in ('BSD100', 'DIV2K-val'):
        assert {'NatSR@0.25', 'NatSR@0.75', 'mix@0.25', 'mix@0.5', 'mix@0.75'} <= {m for m, s2 in x4 if s2 == s}
        # the output blend at 0.5 is the rounded mean of the two images: its tone lies between theirs
        tones = [float(x4[m, s]['tone']) for m in ('FRSR', 'mix@0.5', 'NatSR')]
        assert min(tones[0], tones[2]) - 0.01 <= tones[1] <= max(tones[0], tones[2]) + 0.01
    for png in ('perception_distortion.png', 'perception_distortion_DIV2K-val.png', 'crops.png', 'crops_flat.png'):
        img = utils.read_image(str(out / png))
        assert img.ndim == 3 and min(img.shape[:2]) > 200 and np.std(img) > 10


def test_quality_scores_a_list_of_checkpoints_on_the_validation_set(tmp_path):
    data = bench_data(tmp_path)
    model = random_models(tmp_path, (('FRSR', 4, 0), ('NatSR', 4, 1)))
    out = tmp_path / 'out'
    r = run('--data', data, '--out', out, '--scales', '4', '--no_niqe', '--limit', '1',
            '--checkpoints', '%s,%s' % (model / 'FRSR', model / 'NatSR'))
    if r.returncode == 2 and 'LPIPS needs' in r.stderr:
        pytest.skip(r.stderr.strip())
    assert r.returncode == 0, r.stderr[-2000:]
    table = (out / 'quality.md').read_text()
    assert '#### x4 DIV2K-val (1 images)' in table and 'Set5' not in table.split('### Tone')[0]
    rows = list(csv.DictReader(open(out / 'per_image.csv')))
    assert {r['method'] for r in rows} == {'bicubic', 'FRSR', 'NatSR', 'HR'}
    assert {r['set'] for r in rows} == {'DIV2K-val'}
    assert all(np.isfinite(float(r['lpips'])) for r in rows if r['method'] != 'HR')
    # mistakes are one error line before any work
    for args, message in ((('--checkpoints', tmp_path / 'nothing'), 'nothing.index not found'),
                          (('--checkpoints', model / 'FRSR', '--scales', '4,2'), 'give one scale'),
                          (('--sets', 'Urban100'), "unknown set 'Urban100'")):
        r = run('--data', data, '--out', out, *args)
        assert r.returncode == 2 and message in r.stderr and r.stderr.count('\n') == 1, r.stderr
