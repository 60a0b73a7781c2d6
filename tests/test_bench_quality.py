"""bench/quality.py end to end on one image per set, with random-weight FRSR / NatSR checkpoints."""
import csv
import os
import shutil
import subprocess
import sys

import numpy as np

from conftest import ROOT, shared_path
import utils


def test_quality_benchmark_writes_table_and_pictures(tmp_path):
    data = tmp_path / 'data'
    for s, name in (('Set5', 'bird.bmp'), ('Set14', 'comic.bmp'), ('BSD100', '3096.jpg')):
        (data / s / 'HR').mkdir(parents=True)
        shutil.copy(shared_path('data', s, 'HR', name), data / s / 'HR' / name)
    import sr
    for name, scale, seed in (('FRSR', 4, 0), ('NatSR', 4, 1), ('FRSR_x2', 2, 0)):
        g = sr.Generator(scale, seed=seed)
        g.save(str(tmp_path / 'Model' / name))
        g.close()
    out = tmp_path / 'out'
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'bench', 'quality.py'), '--data', str(data),
                        '--modelpath', str(tmp_path / 'Model'), '--out', str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'x3 skipped' in r.stderr and 'FRSR_x3' in r.stderr          # no FRSR_x3 checkpoint given
    table = (out / 'quality.md').read_text()
    for head in ('### x4', '### x2', '### The dial'):
        assert head in table
    assert '### x3' not in table
    for method in ('| bicubic |', '| FRSR |', '| NatSR |', '| HR |', '| FRSR_x2 |', '| 0.5 |'):
        assert method in table
    assert '(28.42 / 0.8104)' in table and '(3.80)' in table and '(33.66 / 0.9299)' in table  # the paper's
    rows = list(csv.DictReader(open(out / 'per_image.csv')))
    psnr = {(r['method'], r['scale'], r['set']): float(r['psnr']) for r in rows}
    assert 29.7 < psnr[('bicubic', '4', 'Set5')] < 30.7    # bicubic on bird x4: 30.18 dB
    assert psnr[('bicubic', '2', 'Set5')] > psnr[('bicubic', '4', 'Set5')] + 3
    # each scale's table holds that scale's figures alone (the bicubic rows of x4 and x2 share a name)
    x2_table = table[table.index('### x2'):]
    assert '| bicubic | %.2f / ' % psnr[('bicubic', '2', 'Set5')] in x2_table
    assert '| bicubic | %.2f / ' % psnr[('bicubic', '4', 'Set5')] in table[:table.index('### x2')]
    assert psnr[('FRSR', '4', 'Set5')] < psnr[('bicubic', '4', 'Set5')]  # random weights
    grid = {r['method']: float(r['grid']) for r in rows if r['set'] == 'BSD100' and r['scale'] == '4'}
    assert np.isnan(grid['FRSR']) and np.isfinite(grid['NatSR']) and np.isfinite(grid['NatSR@0.5'])
    niqe = {r['method']: float(r['niqe']) for r in rows if r['set'] == 'BSD100' and r['scale'] == '4'}
    assert all(np.isfinite(v) for v in niqe.values()) and set(niqe) >= {'HR', 'NatSR@0.25', 'NatSR@0.75'}
    for png in ('perception_distortion.png', 'crops.png'):
        img = utils.read_image(str(out / png))
        assert img.ndim == 3 and min(img.shape[:2]) > 200 and np.std(img) > 10
