"""export.py: the SavedModel loads in plain TF2 (eager, no compat.v1) and gives test.py's pixels."""
import os
import subprocess
import sys

import numpy as np
import pytest

from natsr import device
import export
from natsr.inference import sr
from natsr.inference import upscaler
import utils
from conftest import ROOT, load_in_tf2

def image(h, w, seed=0):
    rng = np.random.RandomState(seed)
    ramp = np.add.outer(np.arange(h), np.arange(w))[:, :, None] / float(h + w)
    return np.clip((0.5 * ramp + 0.5 * rng.rand(h, w, 3)) * 255, 0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def shipped(tmp_path_factory):
    """A random-weight FRSR x4 checkpoint in the shipped layout (Model/FRSR.index + .data)."""
    folder = tmp_path_factory.mktemp('models')
    gen = sr.Generator(4, seed=11)
    gen.save(str(folder / 'FRSR'))
    gen.close()
    return folder


def test_savedmodel_gives_test_py_pixels(shipped, tmp_path):
    img = image(13, 17)   # odd-sized
    lr = tmp_path / 'lr'
    lr.mkdir()
    utils.save_image(str(lr / 'odd.png'), img)
    res = subprocess.run([sys.executable, os.path.join(ROOT, 'test.py'), '--model', 'FRSR', '--modelpath',
                          str(shipped), '--datapath', str(lr), '--savepath', str(tmp_path / 'res'), '--save', '1'],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    assert res.returncode == 0, res.stderr
    want = utils.read_image(str(tmp_path / 'res' / 'FRSR' / 'odd.png'))
    assert want.shape == (52, 68, 3) and want.dtype == np.uint8
    assert 0 < want.mean() < 255 and want.std() > 5   # not a saturated image: the check has teeth

    out = tmp_path / 'exported' / 'FRSR_x4'
    assert export.main(['--model', 'FRSR', '--modelpath', str(shipped), '--out', str(out)]) == 0
    assert os.path.isfile(out / 'saved_model.pb') and os.path.isdir(out / 'variables')
    np.save(tmp_path / 'in.npy', img)
    # test.py turns on TensorFlow's oneDNN ops; the SavedModel gives the same pixels under the same
    # backend (across backends, convolutions differ by float rounding, so a rare pixel may be 1 off)
    assert np.array_equal(load_in_tf2(out, tmp_path, onednn=True), want)
    # and under Eigen's convolutions (or whatever this test process runs): test.py's own functions
    gen = sr.Generator(4, str(shipped / 'FRSR'))
    try:
        here = upscaler.upscale_image(img, 4, lambda rgb: gen(rgb, tile=0))
    finally:
        gen.close()
    assert np.array_equal(load_in_tf2(out, tmp_path, onednn=device.onednn_enabled()), here)


def test_export_errors(shipped, tmp_path, capsys):
    out = tmp_path / 'taken'
    out.mkdir()
    assert export.main(['--model', 'FRSR', '--modelpath', str(shipped), '--out', str(out)]) == 2
    assert 'exists' in capsys.readouterr().err
    assert export.main(['--model', 'NatSR', '--modelpath', str(shipped), '--out', str(tmp_path / 'a')]) == 2
    assert 'no checkpoint for model NatSR' in capsys.readouterr().err
    # an x4 checkpoint exported as x2: refused by the same check as test.py's
    assert export.main(['--checkpoint', str(shipped / 'FRSR'), '--scale', '2', '--out', str(tmp_path / 'b')]) == 2
    assert 'does not fit this model' in capsys.readouterr().err
    assert export.main(['--checkpoint', str(shipped / 'FRSR'), '--out', str(tmp_path / 'c')]) == 2
    assert '--scale' in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'a') and not os.path.exists(tmp_path / 'b')
    assert not [f for f in os.listdir(tmp_path) if f.startswith('.export-')]


def test_export_removes_the_work_folders_of_killed_runs(shipped, tmp_path, capsys):
    """An export killed midway (SIGKILL) leaves its hidden work folder beside --out; the next export
    into that folder removes it (one note), and keeps those of exports still running."""
    import signal
    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    child.send_signal(signal.SIGKILL)
    child.wait()
    dead = tmp_path / ('.FRSR_x4.onnx.pid%d.k1ll3d00.tmp' % child.pid)     # as utils.temporary_folder names it
    dead.mkdir()
    (dead / 'model.onnx').write_bytes(b'\0' * 1000)
    running = tmp_path / ('.other.pid%d.runn1ng0.tmp' % os.getpid())
    running.mkdir()
    assert export.main(['--model', 'FRSR', '--modelpath', str(shipped), '--out', str(tmp_path / 'FRSR_x4')]) == 0
    assert not dead.exists() and running.exists()
    out = capsys.readouterr().out
    assert 'note: removed 1 temporary file of interrupted runs in %s (%s)' % (tmp_path, dead.name) in out
    assert sorted(os.listdir(tmp_path)) == sorted(['FRSR_x4', running.name])   # its own work folder is gone too
