"""test.py end to end, in subprocesses: the bicubic Set5 baselines, checkpoints (ours and the
original graph's), image kinds, the default job, and bad inputs (clear one-line errors, no traceback).

Each subprocess that builds a network pays the TensorFlow import (~5 s), so those cases are grouped;
bicubic and argument errors never import TensorFlow.
"""
import csv
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import utils
from conftest import ROOT, shared_path
from imresize import imresize

SCRIPT = os.path.join(ROOT, 'test.py')
SET5_BICUBIC = {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)}


def script(*args, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
    return subprocess.run([sys.executable, SCRIPT] + [str(a) for a in args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def load_script_module():
    """test.py as a module (its name clashes with the standard library's `test` package)."""
    spec = importlib.util.spec_from_file_location('natsr_test_script', SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def random_image(shape, seed, dtype=np.uint8):
    rng = np.random.RandomState(seed)
    top = np.iinfo(dtype).max
    h, w = shape[:2]
    ramp = np.add.outer(np.arange(h), np.arange(w)) / float(h + w)
    if len(shape) == 3:
        ramp = ramp[:, :, None]
    return np.clip((0.6 * ramp + 0.4 * rng.rand(*shape)) * top, 0, top).astype(dtype)


def no_traceback(res):
    assert 'Traceback' not in res.stderr and 'Traceback' not in res.stdout, res.stderr


# ---------------------------------------------------------------- bicubic baseline

@pytest.mark.parametrize('scale', [2, 3, 4])
def test_bicubic_set5(tmp_path, scale):
    lr = shared_path('data', 'Set5', 'LR_bicubic', 'X%d' % scale)
    hr = shared_path('data', 'Set5', 'HR')
    res = script('--model', 'bicubic', '--scale', scale, '--ref', 1, '--datapath', lr, '--labelpath', hr,
                 '--savepath', tmp_path)
    assert res.returncode == 0, res.stderr
    assert 'device: CPU' in res.stdout
    mean = [line.split() for line in res.stdout.splitlines() if line.startswith('mean')]
    assert len(mean) == 1
    want_psnr, want_ssim = SET5_BICUBIC[scale]
    assert abs(float(mean[0][1]) - want_psnr) < 0.05 and abs(float(mean[0][2]) - want_ssim) < 0.002
    rows = read_csv(tmp_path / ('bicubic_x%d' % scale) / 'metrics.csv')   # written even without --save
    assert [r['image'] for r in rows] == ['%sx%d.png' % (n, scale) for n in
                                          ('baby', 'bird', 'butterfly', 'head', 'woman')] + ['mean']
    assert abs(float(rows[-1]['psnr']) - want_psnr) < 0.05 and abs(float(rows[-1]['ssim']) - want_ssim) < 0.002
    assert not [f for f in os.listdir(tmp_path / ('bicubic_x%d' % scale)) if f.endswith('.png')]


def test_default_job_falls_back_to_bicubic(tmp_path):
    import skimage.data
    res = script('--modelpath', tmp_path / 'no_models', '--savepath', tmp_path / 'out')
    assert res.returncode == 0, res.stderr
    assert 'no NatSR model in' in res.stdout and 'NatSR.index' in res.stdout
    out = tmp_path / 'out' / 'bicubic_x4'
    rows = read_csv(out / 'metrics.csv')
    names = ['astronaut', 'coffee', 'chelsea', 'camera', 'rocket']
    assert [r['image'] for r in rows] == names + ['mean']
    assert 20 < float(rows[-1]['psnr']) < 40 and 0.5 < float(rows[-1]['ssim']) < 1
    for name in names:
        photo = getattr(skimage.data, name)()
        saved = utils.read_image(str(out / (name + '.png')))
        assert saved.shape == (photo.shape[0] // 4 * 4, photo.shape[1] // 4 * 4) + photo.shape[2:]


def test_default_job_runs_the_shipped_natsr(tmp_path):
    """The README's first command: NatSR from Model/ on the bundled photos, above bicubic (28.61 dB)."""
    res = script('--savepath', tmp_path / 'out')
    assert res.returncode == 0, res.stderr
    assert 'note:' not in res.stdout
    rows = read_csv(tmp_path / 'out' / 'NatSR' / 'metrics.csv')
    assert [r['image'] for r in rows] == ['astronaut', 'coffee', 'chelsea', 'camera', 'rocket', 'mean']
    assert 28.61 + 0.3 < float(rows[-1]['psnr']) < 40
    assert len([f for f in os.listdir(tmp_path / 'out' / 'NatSR') if f.endswith('.png')]) == 5


# ---------------------------------------------------------------- networks

def test_our_checkpoint_folder_and_image_kinds(tmp_path):
    """A random-weight FRSR_x2 checkpoint folder (`checkpoint` file + model-7.*), RGB / gray / RGBA /
    16-bit / TIFF / BMP inputs, a corrupt file and a text file named .png, bare --save."""
    import sr
    lr_dir = tmp_path / 'lr'
    lr_dir.mkdir()
    images = {'rgb.png': random_image((16, 20, 3), 0), 'gray.png': random_image((12, 10), 1),
              'rgba.png': random_image((10, 14, 4), 2), 'deep.png': random_image((9, 11, 3), 3, np.uint16),
              'photo.tif': random_image((8, 9, 3), 4), 'pic.bmp': random_image((7, 12, 3), 5)}
    for name, img in images.items():
        utils.save_image(str(lr_dir / name), img)
    (lr_dir / 'corrupt.png').write_bytes((lr_dir / 'rgb.png').read_bytes()[:70])
    (lr_dir / 'text.png').write_text('not an image\n')

    gen = sr.Generator(2, seed=7)
    try:
        gen.save(str(tmp_path / 'Model' / 'FRSR_x2' / 'model-7'))
        direct = {name: np.clip(gen(utils.to_float(utils.to_rgb(img))), 0, 1) for name, img in images.items()}
    finally:
        gen.close()
    assert os.path.isfile(tmp_path / 'Model' / 'FRSR_x2' / 'checkpoint')

    res = script('--model', 'FRSR_x2', '--modelpath', tmp_path / 'Model', '--datapath', lr_dir,
                 '--savepath', tmp_path / 'out', '--save')
    no_traceback(res)
    assert res.returncode == 1, res.stderr        # two files failed, the rest ran
    assert 'device: CPU' in res.stdout or 'device: GPU' in res.stdout
    assert 'model-7' in res.stdout
    for bad in ('corrupt.png', 'text.png'):
        assert 'error: %s: cannot read image' % (lr_dir / bad) in res.stderr
    assert 'error: 2 of 8 images failed' in res.stderr
    out = tmp_path / 'out' / 'FRSR_x2'
    assert sorted(os.listdir(out)) == sorted(os.path.splitext(n)[0] + '.png' for n in images)

    def close(a, b):
        diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
        return diff.max() <= 1 and (diff == 0).mean() > 0.99

    for name, img in images.items():
        saved = utils.read_image(str(out / (os.path.splitext(name)[0] + '.png')))
        h, w = img.shape[:2]
        assert saved.shape[:2] == (2 * h, 2 * w) and saved.dtype == img.dtype, name
        if name == 'gray.png':
            assert saved.ndim == 2
            assert close(saved, utils.to_uint(direct[name].mean(axis=2)))
        elif name == 'rgba.png':
            assert saved.shape[2] == 4
            assert close(saved[:, :, :3], utils.to_uint(direct[name]))
            alpha = utils.to_uint(np.clip(imresize(utils.to_float(img[:, :, 3]), 2), 0, 1))
            np.testing.assert_array_equal(saved[:, :, 3], alpha)
        elif name == 'deep.png':
            assert saved.dtype == np.uint16 and saved.shape[2] == 3
            assert close(saved, utils.to_uint(direct[name], np.uint16))
        else:
            assert close(saved, utils.to_uint(direct[name])), name


def test_original_checkpoint_with_reference_and_tiles(tmp_path):
    """Weights saved by the original release's graph (Model/FRSR.index / .data), --ref 1 with
    babyx4.png ~ baby.png and bird_x4.png ~ bird.bmp, --tile, --csv elsewhere."""
    from test_networks import save_from_original_graph
    lr_dir, hr_dir = tmp_path / 'lr', tmp_path / 'hr'
    lr_dir.mkdir()
    hr_dir.mkdir()
    lrs = {'babyx4.png': random_image((11, 13, 3), 10), 'bird_x4.png': random_image((9, 14, 3), 11)}
    hrs = {'baby.png': random_image((46, 54, 3), 12), 'bird.bmp': random_image((36, 56, 3), 13)}
    for folder, files in ((lr_dir, lrs), (hr_dir, hrs)):
        for name, img in files.items():
            utils.save_image(str(folder / name), img)
    outputs = save_from_original_graph('FRSR', str(tmp_path / 'Model' / 'FRSR'),
                                       [utils.to_float(img)[None] for img in lrs.values()], seed=3)
    direct = {name: y[0] for name, y in zip(lrs, outputs)}

    res = script('--model', 'FRSR', '--modelpath', tmp_path / 'Model', '--datapath', lr_dir, '--labelpath', hr_dir,
                 '--ref', 1, '--save', 1, '--tile', 6, '--savepath', tmp_path / 'out', '--csv', tmp_path / 'm.csv')
    no_traceback(res)
    assert res.returncode == 0, res.stderr
    assert 'checkpoint %s' % (tmp_path / 'Model' / 'FRSR') in res.stdout
    rows = read_csv(tmp_path / 'm.csv')
    assert [r['image'] for r in rows] == ['babyx4.png', 'bird_x4.png', 'mean']
    assert not os.path.exists(tmp_path / 'out' / 'FRSR' / 'metrics.csv')
    for name, img in lrs.items():
        saved = utils.read_image(str(tmp_path / 'out' / 'FRSR' / name))
        want = utils.to_uint(np.clip(direct[name], 0, 1))
        assert saved.shape == want.shape == (4 * img.shape[0], 4 * img.shape[1], 3)
        assert np.abs(saved.astype(int) - want).max() <= 1


def test_checkpoint_of_another_model_or_without_weights():
    """The original release's .index files alone: a x2 index does not fit the x4 graph, and an
    index without its .data shard cannot be restored; both are one-line CheckpointErrors."""
    import sr
    ref = shared_path('reference', 'natsr-original')
    with pytest.raises(sr.CheckpointError, match='does not fit this model .*lacks GEN/conv_up2'):
        sr.Generator(4, os.path.join(ref, 'FRSR_x2'))
    with pytest.raises(sr.CheckpointError,
                       match=r'does not fit this model .*conv_up1/conv2d/bias \[256\], the graph needs \[576\]'):
        sr.Generator(3, os.path.join(ref, 'FRSR_x2'))
    # x4's conv_up1 has x2's shape: only the extra conv_up2 tells them apart
    with pytest.raises(sr.CheckpointError, match='has GEN/conv_up2/conv2d/bias, which the graph lacks'):
        sr.Generator(2, os.path.join(ref, 'FRSR'))
    with pytest.raises(sr.CheckpointError, match='FRSR.data-00000-of-00001 not found') as err:
        sr.Generator(4, os.path.join(ref, 'FRSR'))
    assert '\n' not in str(err.value)


# ---------------------------------------------------------------- bad inputs

@pytest.fixture
def folders(tmp_path):
    lr, hr, empty = tmp_path / 'lr', tmp_path / 'hr', tmp_path / 'empty'
    for d in (lr, hr, empty):
        d.mkdir()
    for name in ('a.png', 'bx2.png', 'c.png'):
        utils.save_image(str(lr / name), random_image((6, 7, 3), 0))
    for name in ('a.png', 'b.png', 'd.png'):
        utils.save_image(str(hr / name), random_image((12, 14, 3), 1))
    (empty / 'notes.txt').write_text('no images here\n')
    return tmp_path


@pytest.mark.parametrize('args, message', [
    (['--datapath', '{t}/empty'], 'error: LR folder {t}/empty: no images'),
    (['--datapath', '{t}/missing'], 'error: LR folder {t}/missing: no such folder'),
    (['--datapath', '{t}/lr', '--labelpath', '{t}/hr', '--scale', '2'],
     'error: LR and HR folders do not match (pairing by file stem, LR may end in x2): 3 LR vs 3 HR images; '
     'no HR image for c.png; no LR image for d.png'),
    (['--datapath', '{t}/lr', '--ref', '1'], 'error: --ref 1 needs --labelpath'),
    (['--datapath', '{t}/lr', '--model', 'NatSR', '--modelpath', '{t}/models'],
     'error: no checkpoint for model NatSR: {t}/models/NatSR.index not found'),
    (['--datapath', '{t}/lr', '--model', 'FRSR_x2', '--scale', '4'], 'error: --scale 4 conflicts with --model FRSR_x2'),
    (['--datapath', '{t}/lr', '--tile', '0'], 'error: --tile must be a positive number'),
])
def test_bad_inputs(folders, args, message):
    args = [a.format(t=folders) for a in args]
    if '--model' not in args:
        args += ['--model', 'bicubic']
    res = script(*(args + ['--savepath', folders / 'out', '--save', '1']))
    no_traceback(res)
    assert res.returncode == 2
    assert message.format(t=folders) in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not os.path.exists(folders / 'out')   # nothing was done


def test_bad_model_name_is_a_usage_error(folders):
    res = script('--datapath', folders / 'lr', '--model', 'EDSR')
    assert res.returncode == 2 and 'invalid choice' in res.stderr
    no_traceback(res)


def test_pairing_by_stem():
    mod = load_script_module()
    pairs = mod.pair_files(['L/babyx4.png', 'L/bird_x4.png', 'L/head.png', 'L/woman_X4.jpg'],
                           ['H/baby.bmp', 'H/bird.png', 'H/head.bmp', 'H/woman.bmp'], 4)
    assert pairs == [('L/babyx4.png', 'H/baby.bmp'), ('L/bird_x4.png', 'H/bird.png'),
                     ('L/head.png', 'H/head.bmp'), ('L/woman_X4.jpg', 'H/woman.bmp')]
    # the suffix must be the scale's; an exact stem wins over a stripped one
    with pytest.raises(mod.UsageError, match='no HR image for babyx2.png'):
        mod.pair_files(['L/babyx2.png'], ['H/baby.bmp'], 4)
    assert mod.pair_files(['L/ax4.png'], ['H/ax4.png'], 4) == [('L/ax4.png', 'H/ax4.png')]
    with pytest.raises(mod.UsageError, match='both pair with HR'):
        mod.pair_files(['L/a.png', 'L/ax4.png'], ['H/a.png'], 4)
    with pytest.raises(mod.UsageError, match='same name'):
        mod.pair_files(['L/a.png'], ['H/a.png', 'H/a.bmp'], 4)
    with pytest.raises(mod.UsageError, match=r'no LR image for b.png, c.png, d.png, e.png, f.png \.\.\. \(\+1 more\)'):
        mod.pair_files(['L/a.png'], ['H/%s.png' % c for c in 'abcdefg'], 4)


def test_find_checkpoint_layouts(tmp_path):
    import sr

    def touch(*parts):
        path = tmp_path.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('')
    # the original release's layout: Model/NatSR.index
    touch('Model', 'NatSR.index')
    assert sr.find_checkpoint(str(tmp_path / 'Model'), 'NatSR') == str(tmp_path / 'Model' / 'NatSR')
    # a folder per model, or a training folder, with a `checkpoint` file (a relative path, or an
    # absolute one from before the folder was moved)
    touch('Model', 'FRSR', 'model-20.index')
    (tmp_path / 'Model' / 'FRSR' / 'checkpoint').write_text('model_checkpoint_path: "model-20"\n')
    assert sr.find_checkpoint(str(tmp_path / 'Model'), 'FRSR') == str(tmp_path / 'Model' / 'FRSR' / 'model-20')
    touch('trial0', 'model-5.index')
    (tmp_path / 'trial0' / 'checkpoint').write_text('model_checkpoint_path: "/elsewhere/trial0/model-5"\n'
                                                    'all_model_checkpoint_paths: "/elsewhere/trial0/model-5"\n')
    assert sr.find_checkpoint(str(tmp_path / 'trial0'), 'FRSR_x2') == str(tmp_path / 'trial0' / 'model-5')
    # --modelpath naming a prefix
    assert sr.find_checkpoint(str(tmp_path / 'trial0' / 'model-5'), 'FRSR') == str(tmp_path / 'trial0' / 'model-5')
    # Model/checkpoint naming NatSR (as Saver.save(sess, 'Model/NatSR') leaves it) is not FRSR_x3's
    (tmp_path / 'Model' / 'checkpoint').write_text('model_checkpoint_path: "NatSR"\n')
    assert sr.find_checkpoint(str(tmp_path / 'Model'), 'NatSR') == str(tmp_path / 'Model' / 'NatSR')
    with pytest.raises(sr.CheckpointError, match='no checkpoint for model FRSR_x3: %s.index not found'
                       % (tmp_path / 'Model' / 'FRSR_x3')):
        sr.find_checkpoint(str(tmp_path / 'Model'), 'FRSR_x3')
    # --modelpath at the trainers' --checkpoint_dir: the one trial of the model, or the candidates
    for trial in ('FRSR_x4_trial0', 'NMD_x4_trial0'):
        touch('ck', trial, 'model-9.index')
        (tmp_path / 'ck' / trial / 'checkpoint').write_text('model_checkpoint_path: "model-9"\n')
    assert sr.find_checkpoint(str(tmp_path / 'ck'), 'FRSR') == str(tmp_path / 'ck' / 'FRSR_x4_trial0' / 'model-9')
    with pytest.raises(sr.CheckpointError, match=r'NatSR.index not found, and no NatSR_x4_trial<N> folder '
                                                 r'\(it holds FRSR_x4_trial0, NMD_x4_trial0\)'):
        sr.find_checkpoint(str(tmp_path / 'ck'), 'NatSR')
    touch('ck', 'FRSR_x4_trial12', 'model-3.index')
    (tmp_path / 'ck' / 'FRSR_x4_trial12' / 'checkpoint').write_text('model_checkpoint_path: "model-3"\n')
    with pytest.raises(sr.CheckpointError, match=r'holds 2 trials of FRSR \(FRSR_x4_trial0, FRSR_x4_trial12\): '
                                                 r'pick one, e.g. --modelpath %s' % (tmp_path / 'ck' / 'FRSR_x4_trial12')):
        sr.find_checkpoint(str(tmp_path / 'ck'), 'FRSR')
