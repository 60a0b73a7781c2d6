"""app.py, the web page, without a browser: each request is test.py's job on the upload (the same
file, byte for byte), the networks are built once, and every bad input gets test.py's one-line
message naming the upload, after which the next request runs. tests/test_app_browser.py drives the
page itself in Chromium."""
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

import app
import utils
from conftest import ROOT, load_script_module, shared_path


@pytest.fixture(scope='module')
def runner(tmp_path_factory):
    return app.Runner(str(tmp_path_factory.mktemp('app')), os.path.join(ROOT, 'Model'))


def png_header(width, height):
    """The first bytes of a PNG that declares width x height RGB pixels (no image data)."""
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + struct.pack('>I', 13) + b'IHDR' + ihdr + struct.pack('>I', zlib.crc32(b'IHDR' + ihdr))


def photo(tmp_path, name='photo.png', shape=(24, 30, 3), seed=0):
    img = (np.random.RandomState(seed).rand(*shape) * 255).astype(np.uint8)
    path = str(tmp_path / name)
    utils.save_image(path, img)
    return path


def test_result_is_test_py_output_byte_for_byte(runner, tmp_path):
    """bicubic, FRSR_x2 and the dial: the file the page offers is the one test.py writes for the same
    upload and options."""
    src = photo(tmp_path, shape=(20, 26, 4))     # RGBA: the alpha channel comes back too
    script = load_script_module()
    for model, dial in (('bicubic', None), ('FRSR_x2', None), ('NatSR', 0.5)):
        out, lr, sr, info = runner.run(src, model, dial)
        folder = tmp_path / ('cli_%s' % model)
        argv = runner.command(os.path.dirname(src), model, dial, str(folder))
        assert script.main(argv) == 0
        sub = 'NatSR_blend0.5' if dial is not None else ('bicubic_x4' if model == 'bicubic' else model)
        with open(out, 'rb') as a, open(folder / sub / 'photo.png', 'rb') as b:
            assert a.read() == b.read(), model
        assert sr.shape[2] == 4 and lr.shape == (20, 26, 4)
        assert ('x4' if model != 'FRSR_x2' else 'x2') in info and ' s' in info


def test_networks_are_built_once(runner, tmp_path):
    src = photo(tmp_path)
    runner.run(src, 'FRSR_x2')
    built = dict(runner.cache)
    runner.run(src, 'FRSR_x2')
    assert runner.cache == built and len([k for k in built if 'FRSR_x2' in k[0]]) == 1


def test_dial_options():
    r = app.Runner('/tmp', 'Model')
    assert '--blend' not in r.command('d', 'NatSR', 1.0, 'o')       # 1: NatSR itself, one network
    assert r.command('d', 'NatSR', 0.25, 'o')[-2:] == ['--blend', '0.25']
    assert '--blend' not in r.command('d', 'FRSR', 0.25, 'o')       # the dial is NatSR's


@pytest.mark.parametrize('kind', ['text', 'truncated', 'bomb'])
def test_bad_uploads_get_one_line_and_the_next_one_runs(runner, tmp_path, kind):
    path = tmp_path / 'upload.png'
    if kind == 'text':
        path.write_text('not an image at all\n')
        want = 'upload.png: cannot read image (not a PNG, JPEG, BMP, TIFF or WebP file)'
    elif kind == 'truncated':
        good = photo(tmp_path, 'good.png', shape=(40, 40, 3))
        path.write_bytes(open(good, 'rb').read()[:120])
        want = 'upload.png: cannot read image ('
    else:
        path.write_bytes(png_header(15000, 15000))
        want = 'upload.png: its header declares 15000x15000 pixels, more than the %d' % utils.MAX_PIXELS
    with pytest.raises(ValueError) as err:
        runner.run(str(path), 'bicubic')
    message = str(err.value)
    assert message.startswith(want) and '\n' not in message and runner.workdir not in message, message
    out, _, _, _ = runner.run(photo(tmp_path, 'fine.png'), 'bicubic')    # the page stays usable
    assert os.path.isfile(out)


def test_image_too_large_for_the_memory(runner, tmp_path, monkeypatch):
    from natsr.inference import memory
    monkeypatch.setattr(memory, 'available_memory', lambda: 1 << 20)   # 1 MB free
    with pytest.raises(ValueError) as err:
        runner.run(photo(tmp_path, 'big.png', shape=(64, 64, 3)), 'bicubic')
    assert str(err.value).startswith('big.png: LR 64x64 at x4 gives 256x256 pixels, which need about')


def test_set5_image_runs_with_frsr(runner):
    """A Set5 LR image (MATLAB's), FRSR: x4, and within the usual PSNR of the shipped model."""
    from natsr.evaluation import metrics
    lr = shared_path('data', 'Set5', 'LR_bicubic', 'X4', 'babyx4.png')
    hr = utils.read_rgb8(shared_path('data', 'Set5', 'HR', 'baby.bmp'))
    out, _, sr, info = runner.run(lr, 'FRSR')
    assert sr.shape == hr.shape and 'FRSR x4' in info and 'whole image' in info
    assert metrics.psnr(utils.to_rgb8(sr), hr, 4) > 32.5


def test_help_and_missing_gradio(tmp_path):
    """--help needs no Gradio; without Gradio the command says how to install it (exit 2)."""
    res = subprocess.run([sys.executable, os.path.join(ROOT, 'app.py'), '--help'], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and '--max_file_size' in res.stdout and '--host' in res.stdout
    code = ('import sys; sys.modules["gradio"] = None; import importlib.util as u; '
            'real = u.find_spec; u.find_spec = lambda n, *a: None if n == "gradio" else real(n, *a); '
            'import app; sys.exit(app.main(["--port", "1"]))')
    res = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == 'error: the web page needs Gradio: pip install --no-deps -r requirements/app.txt'


def test_a_jpeg_upload_names_the_robust_model(runner, tmp_path):
    """A JPEG below quality 90 with FRSR: the info line names FRSR_jpeg, as test.py's note does; not with
    FRSR_jpeg itself, and not for a PNG."""
    from PIL import Image
    img = (np.random.RandomState(1).rand(24, 30, 3) * 255).astype(np.uint8)
    Image.fromarray(img).save(str(tmp_path / 'phone.jpg'), quality=60)
    assert runner.run(str(tmp_path / 'phone.jpg'), 'FRSR')[3].endswith(
        ' · a JPEG of quality 60: FRSR_jpeg keeps more of its gain on it')
    assert 'FRSR_jpeg keeps' not in runner.run(str(tmp_path / 'phone.jpg'), 'FRSR_jpeg')[3]
    assert 'JPEG' not in runner.run(photo(tmp_path), 'FRSR')[3]
