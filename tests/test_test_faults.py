"""test.py on the bad inputs of issue #19 (CMYK JPEG, palette PNG with transparency, SIGTERM and the
temporaries of killed runs, an address-space limit, a checkpoint named after another model, the
messages) and the --blend dial's two modes (#21.3)."""
import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from natsr.evaluation import metrics
import utils
from conftest import ROOT, load_script_module, shared_path
from natsr.imresize import imresize

SCRIPT = os.path.join(ROOT, 'test.py')


def noise(shape, seed):
    return np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)


def error_lines(err):
    return [line for line in err.replace('\r', '\n').splitlines() if line.startswith(('error:', 'note:'))]


def bicubic_x2(lr_dir, out, *extra):
    return load_script_module().main(['--model', 'bicubic', '--scale', '2', '--datapath', str(lr_dir), '--save',
                               '--savepath', str(out)] + list(extra))


# ---------------------------------------------------------------- image kinds

def test_cmyk_jpeg_is_read_as_pillow_converts_it(tmp_path):
    """A CMYK JPEG (Pillow's Adobe kind, stored inverted) comes out as Pillow's RGB, not as RGBA."""
    lr = tmp_path / 'lr'
    lr.mkdir()
    Image.fromarray(noise((12, 10, 4), 0), 'CMYK').save(str(lr / 'ink.jpg'), quality=95)
    with Image.open(str(lr / 'ink.jpg')) as im:
        assert im.mode == 'CMYK'
        want = np.asarray(im.convert('RGB'))
    np.testing.assert_array_equal(utils.read_image(str(lr / 'ink.jpg')), want)
    assert bicubic_x2(lr, tmp_path / 'out') == 0
    saved = utils.read_image(str(tmp_path / 'out' / 'bicubic_x2' / 'ink.png'))
    np.testing.assert_array_equal(saved, utils.to_uint(np.clip(imresize(utils.to_float(want), 2), 0, 1)))


def test_cmyk_jpeg_as_generator_hr_gives_the_rgb_patches(tmp_path):
    """generate_NatSR on a CMYK JPEG writes the patches of Pillow's RGB conversion of it."""
    from generate_Dataset import build, records
    cmyk, rgb = tmp_path / 'cmyk', tmp_path / 'rgb'
    cmyk.mkdir()
    rgb.mkdir()
    Image.fromarray(noise((40, 44, 4), 1), 'CMYK').save(str(cmyk / 'ink.jpg'), quality=95)
    with Image.open(str(cmyk / 'ink.jpg')) as im:
        utils.save_image(str(rgb / 'ink.png'), np.asarray(im.convert('RGB')))
    got = {}
    for folder in (cmyk, rgb):
        out = str(tmp_path / ('%s.tfrecord' % folder.name))
        assert build.main('NatSR', ['--labelpath', str(folder), '--tfrecord', out, '--scale', '2',
                                    '--patch', '16', '--stride', '6']) == 0
        got[folder.name] = sorted(a.tobytes() + b.tobytes() for a, b in records.read_numpy(out))
    assert got['rgb'] and got['cmyk'] == got['rgb']


def test_palette_png_with_transparency_keeps_its_alpha(tmp_path):
    """A palette PNG with a tRNS chunk is read as RGBA (as Pillow converts it) and its alpha upscaled."""
    lr = tmp_path / 'lr'
    lr.mkdir()
    pal = Image.fromarray((noise((9, 11), 2) % 4).astype(np.uint8), 'P')
    pal.putpalette([200, 10, 10, 10, 200, 10, 10, 10, 200, 90, 90, 90])
    pal.save(str(lr / 'pal.png'), transparency=bytes([255, 0, 128, 255]))
    with Image.open(str(lr / 'pal.png')) as im:
        want = np.asarray(im.convert('RGBA'))
    assert 0 < (want[:, :, 3] < 255).mean() < 1
    np.testing.assert_array_equal(utils.read_image(str(lr / 'pal.png')), want)
    assert bicubic_x2(lr, tmp_path / 'out') == 0
    saved = utils.read_image(str(tmp_path / 'out' / 'bicubic_x2' / 'pal.png'))
    assert saved.shape == (18, 22, 4)
    alpha = utils.to_uint(np.clip(imresize(utils.to_float(want[:, :, 3]), 2), 0, 1))
    np.testing.assert_array_equal(saved[:, :, 3], alpha)


# ---------------------------------------------------------------- signals and leftovers

def test_sigterm_stops_like_ctrl_c_and_keeps_what_was_saved(tmp_path):
    lr = tmp_path / 'lr'
    lr.mkdir()
    for i in range(60):
        utils.save_image(str(lr / ('im%02d.png' % i)), noise((96, 96, 3), i))
    out = tmp_path / 'out' / 'bicubic_x4'
    proc = subprocess.Popen([sys.executable, SCRIPT, '--model', 'bicubic', '--datapath', str(lr), '--save',
                             '--savepath', str(tmp_path / 'out')], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.is_dir() and any(n.endswith('.png') and not n.startswith('.')
                                                               for n in os.listdir(out))):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.replace('\r', '\n').splitlines()[-1] == 'interrupted'
    names = os.listdir(out)
    assert 0 < len(names) < 60 and all(n.endswith('.png') and not n.startswith('.') for n in names), names
    for n in names:                                  # every image kept is whole
        assert utils.read_image(str(out / n)).shape == (384, 384, 3)


def test_a_later_run_removes_the_temporaries_of_dead_processes_only(tmp_path):
    lr = tmp_path / 'lr'
    lr.mkdir()
    utils.save_image(str(lr / 'a.png'), noise((8, 8, 3), 0))
    out = tmp_path / 'out' / 'bicubic_x2'
    out.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, '-c', 'pass'])
    gone.wait()
    dead = '.b.pid%d.k2j3abcd.tmp.png' % gone.pid
    alive = '.c.pid%d.zz99yy88.tmp.png' % os.getpid()
    for name in (dead, alive):
        (out / name).write_bytes(b'')
    assert bicubic_x2(lr, tmp_path / 'out') == 0
    assert sorted(os.listdir(out)) == sorted([alive, 'a.png'])
    with utils.atomic_path(str(tmp_path / 'x.png')) as tmp:   # test.py's temporaries are named so
        assert utils.TEMPORARY.match(os.path.basename(tmp)).group(1) == str(os.getpid())


# ---------------------------------------------------------------- memory under an address-space limit

LIMITED = '''
import resource, sys
sys.path.insert(0, %r)
import utils
from natsr.inference import memory
used = int(utils.proc_field('/proc/self/status', 'VmSize:').split()[0]) << 10
resource.setrlimit(resource.RLIMIT_AS, (used + (300 << 20), resource.RLIM_INFINITY))
room = memory.available_memory()
print(room <= 300 << 20, room > 200 << 20)
print(memory.peak_bytes(lambda: None))
'''


def test_address_space_limit_counts_as_memory():
    """Under RLIMIT_AS the memory there is is what the limit leaves, and no allocator figure (which
    undercounts the address space) replaces the network's prior per pixel."""
    res = subprocess.run([sys.executable, '-c', LIMITED % ROOT], capture_output=True, text=True, timeout=120)
    assert res.stdout.splitlines()[:1] == ['True True'], res.stdout   # the room is the limit's
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.splitlines()[1:] == ['(None, None)']


def limit_address_space(size):
    import resource
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (size, resource.RLIM_INFINITY))


def test_image_too_large_for_the_address_space_is_refused_in_one_line(tmp_path):
    """`ulimit -v 2 GB`: a 1200x1200 LR at x4 (23 MP, about 2.7 GB of results) is one error line, not a crash."""
    lr = tmp_path / 'lr'
    lr.mkdir()
    utils.save_image(str(lr / 'big.png'), noise((1200, 1200, 3), 0))
    env = dict(os.environ, OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1')   # few threads' stacks, on any CPU
    res = subprocess.run([sys.executable, SCRIPT, '--model', 'bicubic', '--datapath', str(lr), '--savepath',
                          str(tmp_path / 'out'), '--save'], capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env=env, preexec_fn=limit_address_space(2 << 30))
    assert 'Traceback' not in res.stderr, res.stderr[-2000:]
    lines = error_lines(res.stderr)
    assert res.returncode == 1, res.stderr[-2000:]
    assert lines[0].startswith('error: %s: LR 1200x1200 at x4 gives 4800x4800 pixels, which need about 2.7 GB of '
                               'memory, and ' % (lr / 'big.png')) and lines[0].endswith(' are free for them'), lines


# ---------------------------------------------------------------- checkpoints and messages

def test_checkpoint_named_after_another_model_is_refused(tmp_path):
    lr = tmp_path / 'lr'
    lr.mkdir()
    utils.save_image(str(lr / 'a.png'), noise((8, 8, 3), 0))
    res = subprocess.run([sys.executable, SCRIPT, '--model', 'FRSR', '--modelpath', os.path.join(ROOT, 'Model', 'NatSR'),
                          '--datapath', str(lr)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 2
    assert error_lines(res.stderr) == [
        'error: checkpoint %s is the shipped model NatSR, not FRSR: run it with --model NatSR, or give --modelpath '
        'the folder that holds FRSR' % os.path.join(ROOT, 'Model', 'NatSR')]


def test_datapath_that_is_a_file(tmp_path, capsys):
    utils.save_image(str(tmp_path / 'a.png'), noise((8, 8, 3), 0))
    assert load_script_module().main(['--model', 'bicubic', '--datapath', str(tmp_path / 'a.png')]) == 2
    assert error_lines(capsys.readouterr().err) == [
        'error: LR folder %s is a file, not a folder (give the folder that holds the images)' % (tmp_path / 'a.png')]


def test_full_disk_after_one_image_says_it_is_kept(tmp_path, monkeypatch, capsys):
    import errno
    import imageio.v3 as iio
    lr = tmp_path / 'lr'
    lr.mkdir()
    for name in ('a.png', 'b.png'):
        utils.save_image(str(lr / name), noise((6, 7, 3), 0))
    real = iio.imwrite
    calls = []

    def imwrite(path, img, **kwargs):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, img, **kwargs)
    monkeypatch.setattr(iio, 'imwrite', imwrite)
    assert bicubic_x2(lr, tmp_path / 'out') == 1
    out = tmp_path / 'out' / 'bicubic_x2'
    assert error_lines(capsys.readouterr().err) == [
        'error: cannot save %s (No space left on device); stopped: the 1 image saved before it is kept in %s, '
        'no metrics written' % (out / 'b.png', out)]


def test_blend_of_checkpoints_that_differ_names_the_one(tmp_path):
    from natsr import checkpoints
    from natsr.inference import sr
    for scale, name in ((2, 'x2'), (4, 'x4')):
        g = sr.Generator(scale, seed=scale)
        g.save(str(tmp_path / name))
        g.close()
    a, b = str(tmp_path / 'x2'), str(tmp_path / 'x4')
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.blend_weights(a, b, 0.5)
    assert str(err.value) == '%s and %s cannot be blended: %s has GEN/conv_up2/conv2d/bias, which %s lacks' % (
        a, b, b, a)


# ---------------------------------------------------------------- the dial

def mean_y(img):
    return float(metrics.rgb_to_y(img).mean())


def test_blend_modes_ends_tone_and_tiles(tmp_path):
    """Both modes give FRSR's and NatSR's images bit for bit at A = 0 and 1; at 0.5 the output blend's
    mean Y is the mean of the two ends' within rounding, and its tiled run gives the same bytes."""
    lr, hr = tmp_path / 'lr', tmp_path / 'hr'
    lr.mkdir()
    hr.mkdir()
    full = utils.read_image(shared_path('data', 'Set5', 'LR_bicubic', 'X4', 'babyx4.png'))
    utils.save_image(str(lr / 'baby.png'), full[30:70, 20:68])
    full = utils.read_image(shared_path('data', 'Set5', 'HR', 'baby.bmp'))
    utils.save_image(str(hr / 'baby.png'), full[120:280, 80:272])
    mod = load_script_module()
    runs = {'FRSR': ['--model', 'FRSR'], 'NatSR': []}
    for mode in ('output', 'weights'):
        for a in ('0', '1', '0.5'):
            runs[mode, a] = ['--blend', a, '--blend_mode', mode]
    runs['tiled'] = ['--blend', '0.5', '--tile', '32']
    out, checkpoint = {}, {}
    for key, extra in runs.items():
        save = tmp_path / ('out_%d' % len(out))
        assert mod.main(['--datapath', str(lr), '--labelpath', str(hr), '--savepath', str(save), '--save',
                         '--modelpath', os.path.join(ROOT, 'Model')] + extra) == 0, key
        (folder,) = os.listdir(save)
        out[key] = utils.read_image(str(save / folder / 'baby.png'))
        (name,) = [n for n in os.listdir(save / folder) if n.endswith('.csv')]
        with open(save / folder / name, newline='') as f:
            checkpoint[key] = {row['checkpoint'] for row in csv.DictReader(f)}
    for mode, label in (('output', 'output'), ('weights', 'weight')):   # the record says which mode ran
        assert checkpoint[mode, '0.5'] == {'%s + %s, %s blend 0.5' % (os.path.join(ROOT, 'Model', 'FRSR'),
                                                                      os.path.join(ROOT, 'Model', 'NatSR'), label)}
    for mode in ('output', 'weights'):
        np.testing.assert_array_equal(out[mode, '0'], out['FRSR'])
        np.testing.assert_array_equal(out[mode, '1'], out['NatSR'])
        assert not np.array_equal(out[mode, '0.5'], out['FRSR']) and not np.array_equal(out[mode, '0.5'], out['NatSR'])
    ends = (mean_y(out['FRSR']) + mean_y(out['NatSR'])) / 2
    assert abs(mean_y(out['output', '0.5']) - ends) <= 0.5, (mean_y(out['output', '0.5']), ends)
    np.testing.assert_array_equal(out['tiled'], out['output', '0.5'])


def test_full_disk_while_writing_is_one_error_and_nothing_later(tmp_path, monkeypatch, capfd):
    """A disk that fills while an image is written (the writes are buffered, the flush on closing
    fails): one OSError from save_image, no temporary left, and nothing printed afterwards by an
    encoder left to fail again on its own (imageio's plugin destructor printed 'Exception ignored')."""
    import builtins
    import errno
    import gc

    class FullDisk:
        def __init__(self, path, mode='r', *args, **kwargs):
            self.f = builtins.open(path, mode, *args, **kwargs)

        def write(self, data):
            return memoryview(data).nbytes    # buffered: the disk is found full on the flush

        def close(self):
            self.f.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(utils, 'open', FullDisk, raising=False)
    for name, img in (('a.png', noise((6, 7, 3), 0)), ('b.png', noise((6, 7, 3), 0).astype(np.uint16) * 257)):
        with pytest.raises(OSError) as err:
            utils.save_image(str(tmp_path / name), img)
        assert err.value.errno == errno.ENOSPC
    gc.collect()
    assert os.listdir(tmp_path) == []
    captured = capfd.readouterr()
    assert 'Exception ignored' not in captured.err and 'Traceback' not in captured.err, captured.err
