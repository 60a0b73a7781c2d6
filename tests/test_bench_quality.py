"""bench/quality.py end to end on one image per set, with random-weight FRSR / NatSR checkpoints."""
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
    g = sr.Generator(4, seed=0)
    g.save(str(tmp_path / 'Model' / 'FRSR'))
    g.save(str(tmp_path / 'Model' / 'NatSR'))
    g.close()
    out = tmp_path / 'out'
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'bench', 'quality.py'), '--data', str(data),
                        '--modelpath', str(tmp_path / 'Model'), '--out', str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    table = (out / 'quality.md').read_text()
    for method in ('| bicubic |', '| FRSR |', '| NatSR |', '| HR |'):
        assert method in table
    assert '(28.42 / 0.8104)' in table and '(3.80)' in table     # the paper's figures beside ours
    # bicubic on bird x4 is a known figure; random weights are far below it
    rows = [l.split(',') for l in (out / 'per_image.csv').read_text().splitlines()[1:]]
    psnr = {(m, s): float(p) for m, s, _, p, _, _ in rows}
    assert 29.7 < psnr[('bicubic', 'Set5')] < 30.7    # 30.18 dB
    assert psnr[('FRSR', 'Set5')] < psnr[('bicubic', 'Set5')]
    for png in ('perception_distortion.png', 'crops.png'):
        img = utils.read_image(str(out / png))
        assert img.ndim == 3 and min(img.shape[:2]) > 200 and np.std(img) > 10
