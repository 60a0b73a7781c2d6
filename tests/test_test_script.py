"""test.py end to end, in subprocesses: the bicubic Set5 baselines, checkpoints (ours and the
original graph's), image kinds, the default job, and bad inputs (clear one-line errors, no traceback).

Each subprocess that builds a network pays the TensorFlow import (~5 s), so those cases are grouped;
bicubic and argument errors never import TensorFlow.
"""
import csv
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import cpu_kernels
import utils
from conftest import ROOT, load_script_module, shared_path
from natsr.imresize import imresize
from natsr.inference import job as jobs
from natsr.inference import memory, report
from natsr.process.exits import UsageError

SCRIPT = os.path.join(ROOT, 'test.py')
SET5_BICUBIC = {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)}


def script(*args, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
    return subprocess.run([sys.executable, SCRIPT] + [str(a) for a in args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def job_csv(folder):
    """The one metrics CSV test.py wrote in `folder` (named per job: metrics_<data>_<checkpoint>_<hash>.csv)."""
    found = sorted(f for f in os.listdir(folder) if f.startswith('metrics_') and f.endswith('.csv'))
    assert len(found) == 1, found
    return read_csv(os.path.join(folder, found[0]))


CHATTER = ('absl::InitializeLog', 'oneDNN custom operations', 'port.cc', 'I0000', 'WARNING:tensorflow')


def errors(res):
    """The error / warning lines of stderr (the progress bar shares it)."""
    return [line for line in res.stderr.replace('\r', '\n').splitlines() if line.startswith(('error:', 'warning:'))]


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
    rows = job_csv(tmp_path / ('bicubic_x%d' % scale))   # written even without --save
    assert [r['image'] for r in rows] == ['%sx%d.png' % (n, scale) for n in
                                          ('baby', 'bird', 'butterfly', 'head', 'woman')] + ['mean']
    assert abs(float(rows[-1]['psnr']) - want_psnr) < 0.05 and abs(float(rows[-1]['ssim']) - want_ssim) < 0.002
    assert not [f for f in os.listdir(tmp_path / ('bicubic_x%d' % scale)) if f.endswith('.png')]


def test_metrics_by_name(tmp_path):
    """--metrics names the columns of the table and the CSV (metrics.METRICS), in its order; --niqe adds
    niqe to the default psnr, ssim as before; the values are metrics.measure's."""
    import shutil
    from natsr.evaluation import metrics
    lr, hr = tmp_path / 'lr', tmp_path / 'hr'
    lr.mkdir()
    hr.mkdir()
    for name in ('bird', 'head'):
        shutil.copy(shared_path('data', 'Set5', 'LR_bicubic', 'X4', name + 'x4.png'), lr)
        shutil.copy(shared_path('data', 'Set5', 'HR', name + '.bmp'), hr)
    common = ['--model', 'bicubic', '--datapath', lr, '--labelpath', hr]
    res = script(*common, '--metrics', 'niqe, SSIM', '--savepath', tmp_path / 'a')
    assert res.returncode == 0, res.stderr
    assert [line.split() for line in res.stdout.splitlines() if line.startswith('image')] == [['image', 'NIQE', 'SSIM']]
    named = job_csv(tmp_path / 'a' / 'bicubic_x4')
    assert list(named[0])[:3] == ['image', 'niqe', 'ssim']
    res = script(*common, '--niqe', '--savepath', tmp_path / 'b')
    assert res.returncode == 0, res.stderr
    flag = job_csv(tmp_path / 'b' / 'bicubic_x4')
    assert list(flag[0])[:4] == ['image', 'psnr', 'ssim', 'niqe']
    sr = utils.to_uint(np.clip(imresize(utils.to_float(utils.read_image(str(lr / 'birdx4.png'))), 4), 0, 1))
    ref = utils.modcrop(utils.read_rgb8(str(hr / 'bird.bmp')), 4)
    for rows in (named, flag):
        assert rows[0]['image'] == 'birdx4.png'
        assert float(rows[0]['niqe']) == pytest.approx(metrics.measure('niqe', sr, 4), abs=1e-6)
        assert float(rows[0]['ssim']) == pytest.approx(metrics.measure('ssim', sr, 4, hr=ref), abs=1e-6)


def test_default_job_falls_back_to_bicubic(tmp_path):
    import skimage.data
    res = script('--modelpath', tmp_path / 'no_models', '--savepath', tmp_path / 'out')
    assert res.returncode == 0, res.stderr
    assert 'no NatSR model in' in res.stdout and 'NatSR.index' in res.stdout
    out = tmp_path / 'out' / 'bicubic_x4'
    rows = job_csv(out)
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
    rows = job_csv(tmp_path / 'out' / 'NatSR')
    assert [r['image'] for r in rows] == ['astronaut', 'coffee', 'chelsea', 'camera', 'rocket', 'mean']
    assert 28.61 + 0.3 < float(rows[-1]['psnr']) < 40
    assert len([f for f in os.listdir(tmp_path / 'out' / 'NatSR') if f.endswith('.png')]) == 5


# ---------------------------------------------------------------- networks

def test_our_checkpoint_folder_and_image_kinds(tmp_path):
    """A random-weight FRSR_x2 checkpoint folder (`checkpoint` file + model-7.*), RGB / gray / RGBA /
    16-bit / TIFF / BMP inputs, a corrupt file, a text file named .png and a 1x1 image (below the
    networks' minimum), bare --save; stderr holds none of TensorFlow's start-up lines."""
    from natsr.inference import sr
    lr_dir = tmp_path / 'lr'
    lr_dir.mkdir()
    images = {'rgb.png': random_image((16, 20, 3), 0), 'gray.png': random_image((12, 10), 1),
              'rgba.png': random_image((10, 14, 4), 2), 'deep.png': random_image((9, 11, 3), 3, np.uint16),
              'photo.tif': random_image((8, 9, 3), 4), 'pic.bmp': random_image((7, 12, 3), 5)}
    for name, img in images.items():
        utils.save_image(str(lr_dir / name), img)
    (lr_dir / 'corrupt.png').write_bytes((lr_dir / 'rgb.png').read_bytes()[:70])
    (lr_dir / 'text.png').write_text('not an image\n')
    utils.save_image(str(lr_dir / 'tiny.png'), random_image((1, 1, 3), 6))

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
    assert ('error: %s: LR 1x1 is smaller than 4x4 pixels (smaller inputs come out of the network with wrong '
            'colours; --model bicubic runs them)' % (lr_dir / 'tiny.png')) in errors(res)
    assert 'error: 3 of 9 images failed' in res.stderr
    assert len(errors(res)) == 4
    assert not [c for c in CHATTER if c in res.stderr], res.stderr
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
        elif name == 'deep.png':   # test.py's oneDNN against this process's kernels: 1/65535 steps show them
            assert saved.dtype == np.uint16 and saved.shape[2] == 3
            assert cpu_kernels.deep_close(saved, utils.to_uint(direct[name], np.uint16))
        else:
            assert close(saved, utils.to_uint(direct[name])), name


def test_original_checkpoint_with_reference_and_tiles(tmp_path):
    """Weights saved by the original release's graph (Model/FRSR.index / .data), --ref 1 with
    babyx4.png ~ baby.png and bird_x4.png ~ bird.bmp, --tile below the minimum (a warning),
    --csv elsewhere, which records the checkpoint, the hash of its weights, the folders and options."""
    import tensorflow.compat.v1 as tf
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
    assert errors(res) == ['warning: --tile 6 is below 32 LR pixels: every tile also runs 46 pixels of context on '
                           'each side (up to 266x the work of the tile itself); --tile 32 or more, or no --tile, is '
                           'much faster']
    rows = read_csv(tmp_path / 'm.csv')
    assert [r['image'] for r in rows] == ['babyx4.png', 'bird_x4.png', 'mean']
    reader = tf.train.load_checkpoint(str(tmp_path / 'Model' / 'FRSR'))
    weights = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith('GEN/')}
    job = {'model': 'FRSR', 'scale': '4', 'checkpoint': str(tmp_path / 'Model' / 'FRSR'),
           'weights': report.weights_hash(weights), 'datapath': str(lr_dir), 'labelpath': str(hr_dir),
           'tile': '6', 'precision': 'fp32'}
    assert all({k: r[k] for k in job} == job for r in rows)
    assert not [f for f in os.listdir(tmp_path / 'out' / 'FRSR') if f.endswith('.csv')]
    for name, img in lrs.items():
        saved = utils.read_image(str(tmp_path / 'out' / 'FRSR' / name))
        want = utils.to_uint(np.clip(direct[name], 0, 1))
        assert saved.shape == want.shape == (4 * img.shape[0], 4 * img.shape[1], 3)
        assert np.abs(saved.astype(int) - want).max() <= 1


def test_checkpoint_of_another_model_or_without_weights():
    """The original release's .index files alone: a x2 index does not fit the x4 graph, and an
    index without its .data shard cannot be restored; both are one-line CheckpointErrors."""
    from natsr import checkpoints
    from natsr.inference import sr
    ref = shared_path('reference', 'natsr-original')
    with pytest.raises(checkpoints.CheckpointError, match='does not fit this model .*lacks GEN/conv_up2'):
        sr.Generator(4, os.path.join(ref, 'FRSR_x2'))
    with pytest.raises(checkpoints.CheckpointError,
                       match=r'does not fit this model .*conv_up1/conv2d/bias \[256\], the graph needs \[576\]'):
        sr.Generator(3, os.path.join(ref, 'FRSR_x2'))
    # x4's conv_up1 has x2's shape: only the extra conv_up2 tells them apart
    with pytest.raises(checkpoints.CheckpointError, match='has GEN/conv_up2/conv2d/bias, which the graph lacks'):
        sr.Generator(2, os.path.join(ref, 'FRSR'))
    with pytest.raises(checkpoints.CheckpointError, match='FRSR.data-00000-of-00001 not found') as err:
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
    (['--datapath', '{t}/empty'], 'error: LR folder {t}/empty: no image files (.png'),
    (['--datapath', '{t}/missing'], 'error: LR folder {t}/missing: no such folder'),
    (['--datapath', '{t}/lr', '--labelpath', '{t}/hr', '--scale', '2'],
     'error: LR and HR folders do not match: no HR image for 1 of 3 LR images (c.png); no LR image for 1 of 3 '
     'HR images (d.png); an LR image is named like its HR image, optionally followed by x2, _x2 or -x2'),
    (['--datapath', '{t}/lr', '--ref', '1'], 'error: --ref 1 needs --labelpath'),
    (['--datapath', '{t}/lr', '--model', 'NatSR', '--modelpath', '{t}/models'],
     'error: no checkpoint for model NatSR: {t}/models/NatSR.index not found'),
    (['--datapath', '{t}/lr', '--model', 'FRSR_x2', '--scale', '4'], 'error: --scale 4 conflicts with --model FRSR_x2'),
    (['--datapath', '{t}/lr', '--tile', '0'], 'error: --tile must be a positive number'),
    (['--datapath', '{t}/lr', '--model', 'FRSR', '--blend', '0.5'], 'error: --blend 0.5: the dial takes'),
    (['--datapath', '{t}/lr', '--model', 'NatSR', '--blend', '1.2'], 'error: --blend 1.2: the dial takes'),
    (['--datapath', '{t}/lr', '--metrics', 'psnr,fid'], "error: --metrics: unknown metric 'fid' (one of psnr, ssim"),
    (['--datapath', '{t}/lr', '--metrics', 'ssim'], 'error: --metrics ssim needs the HR images: --labelpath'),
    (['--datapath', '{t}/lr', '--metrics', 'grid'], 'error: --metrics grid: needs the output of the model'),
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
    pairs = jobs.pair_files(['L/babyx4.png', 'L/bird_x4.png', 'L/head.png', 'L/woman_X4.jpg'],
                           ['H/baby.bmp', 'H/bird.png', 'H/head.bmp', 'H/woman.bmp'], 4)
    assert pairs == [('L/babyx4.png', 'H/baby.bmp'), ('L/bird_x4.png', 'H/bird.png'),
                     ('L/head.png', 'H/head.bmp'), ('L/woman_X4.jpg', 'H/woman.bmp')]
    # the suffix must be the scale's; an exact stem wins over a stripped one
    with pytest.raises(UsageError, match=r'no HR image for 1 of 1 LR images \(babyx2.png\)'):
        jobs.pair_files(['L/babyx2.png'], ['H/baby.bmp'], 4)
    assert jobs.pair_files(['L/ax4.png'], ['H/ax4.png'], 4) == [('L/ax4.png', 'H/ax4.png')]
    assert jobs.pair_files(['L/0001-x4.png', 'L/0002X4.png'], ['H/0001.png', 'H/0002.png'], 4) == [
        ('L/0001-x4.png', 'H/0001.png'), ('L/0002X4.png', 'H/0002.png')]
    with pytest.raises(UsageError, match='both pair with HR'):
        jobs.pair_files(['L/a.png', 'L/ax4.png'], ['H/a.png'], 4)
    with pytest.raises(UsageError, match='same name'):
        jobs.pair_files(['L/a.png'], ['H/a.png', 'H/a.bmp'], 4)
    with pytest.raises(UsageError, match=r'no LR image for 6 of 7 HR images \(b.png, c.png, d.png, e.png, f.png \.\.\. \(\+1 more\)\)'):
        jobs.pair_files(['L/a.png'], ['H/%s.png' % c for c in 'abcdefg'], 4)


def test_find_checkpoint_layouts(tmp_path):
    from natsr import checkpoints

    def touch(*parts):
        path = tmp_path.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('')
    # the original release's layout: Model/NatSR.index
    touch('Model', 'NatSR.index')
    assert checkpoints.find_checkpoint(str(tmp_path / 'Model'), 'NatSR') == str(tmp_path / 'Model' / 'NatSR')
    # a folder per model, or a training folder, with a `checkpoint` file (a relative path, or an
    # absolute one from before the folder was moved)
    touch('Model', 'FRSR', 'model-20.index')
    (tmp_path / 'Model' / 'FRSR' / 'checkpoint').write_text('model_checkpoint_path: "model-20"\n')
    assert checkpoints.find_checkpoint(str(tmp_path / 'Model'), 'FRSR') == str(tmp_path / 'Model' / 'FRSR' / 'model-20')
    touch('trial0', 'model-5.index')
    (tmp_path / 'trial0' / 'checkpoint').write_text('model_checkpoint_path: "/elsewhere/trial0/model-5"\n'
                                                    'all_model_checkpoint_paths: "/elsewhere/trial0/model-5"\n')
    assert checkpoints.find_checkpoint(str(tmp_path / 'trial0'), 'FRSR_x2') == str(tmp_path / 'trial0' / 'model-5')
    # --modelpath naming a prefix
    assert checkpoints.find_checkpoint(str(tmp_path / 'trial0' / 'model-5'), 'FRSR') == str(tmp_path / 'trial0' / 'model-5')
    # Model/checkpoint naming NatSR (as Saver.save(sess, 'Model/NatSR') leaves it) is not FRSR_x3's
    (tmp_path / 'Model' / 'checkpoint').write_text('model_checkpoint_path: "NatSR"\n')
    assert checkpoints.find_checkpoint(str(tmp_path / 'Model'), 'NatSR') == str(tmp_path / 'Model' / 'NatSR')
    with pytest.raises(checkpoints.CheckpointError, match='no checkpoint for model FRSR_x3: %s.index not found'
                       % (tmp_path / 'Model' / 'FRSR_x3')):
        checkpoints.find_checkpoint(str(tmp_path / 'Model'), 'FRSR_x3')
    # --modelpath at the trainers' --checkpoint_dir: the one trial of the model, or the candidates
    for trial in ('FRSR_x4_trial0', 'NMD_x4_trial0'):
        touch('ck', trial, 'model-9.index')
        (tmp_path / 'ck' / trial / 'checkpoint').write_text('model_checkpoint_path: "model-9"\n')
    assert checkpoints.find_checkpoint(str(tmp_path / 'ck'), 'FRSR') == str(tmp_path / 'ck' / 'FRSR_x4_trial0' / 'model-9')
    with pytest.raises(checkpoints.CheckpointError, match=r'NatSR.index not found, and no NatSR_x4_trial<N> folder '
                                                 r'\(it holds FRSR_x4_trial0, NMD_x4_trial0\)'):
        checkpoints.find_checkpoint(str(tmp_path / 'ck'), 'NatSR')
    touch('ck', 'FRSR_x4_trial12', 'model-3.index')
    (tmp_path / 'ck' / 'FRSR_x4_trial12' / 'checkpoint').write_text('model_checkpoint_path: "model-3"\n')
    with pytest.raises(checkpoints.CheckpointError, match=r'holds 2 trials of FRSR \(FRSR_x4_trial0, FRSR_x4_trial12\): '
                                                 r'pick one, e.g. --modelpath %s' % (tmp_path / 'ck' / 'FRSR_x4_trial12')):
        checkpoints.find_checkpoint(str(tmp_path / 'ck'), 'FRSR')


# ---------------------------------------------------------------- output locations, full disk, per-job CSV

def bicubic_job(folders, *args):
    return script('--model', 'bicubic', '--scale', 2, '--datapath', folders / 'lr', *args)


@pytest.mark.parametrize('where, message', [
    (['--savepath', '{t}/file/out', '--save'], 'error: cannot write results to {t}/file/out/bicubic_x2: {t}/file is not a folder'),
    (['--labelpath', '{t}/hr2', '--csv', '{t}/file/m.csv'], 'error: cannot write --csv to {t}/file: {t}/file is not a folder'),
    (['--labelpath', '{t}/hr2', '--csv', '{t}/hr2'], 'error: --csv {t}/hr2 is a folder; give a file name, e.g. {t}/hr2/metrics.csv'),
])
def test_unwritable_output_is_refused_before_any_work(folders, where, message):
    (folders / 'file').write_text('a regular file\n')
    (folders / 'hr2').mkdir()
    for name in ('a', 'b', 'c'):
        utils.save_image(str(folders / 'hr2' / (name + '.png')), random_image((12, 14, 3), 1))
    res = bicubic_job(folders, *[a.format(t=folders) for a in where])
    no_traceback(res)
    assert res.returncode == 2
    assert res.stderr.strip() == message.format(t=folders)
    assert 'job:' not in res.stdout   # nothing was run


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes through file permissions')
def test_folder_without_write_permission(folders):
    (folders / 'locked').mkdir(mode=0o500)
    res = bicubic_job(folders, '--savepath', folders / 'locked', '--save')
    assert res.returncode == 2
    assert 'cannot write in %s (Permission denied)' % (folders / 'locked') in res.stderr


def test_unwritable_names_a_read_only_mount(tmp_path, monkeypatch):
    import errno
    import tempfile

    def read_only(**kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    assert utils.unwritable(str(tmp_path / 'new' / 'folder')) is None
    assert not os.path.exists(tmp_path / 'new')   # the check leaves no trace
    monkeypatch.setattr(tempfile, 'TemporaryFile', read_only)
    assert utils.unwritable(str(tmp_path / 'x')) == 'cannot write in %s (Read-only file system)' % tmp_path


def test_full_disk_while_saving_keeps_what_was_saved(folders, monkeypatch, capsys):
    """The third image hits a full disk: one line, exit status 1, the first two saved, no partial file."""
    import errno
    import imageio.v3 as iio
    mod = load_script_module()
    for name in ('d.png', 'e.png'):
        utils.save_image(str(folders / 'lr' / name), random_image((6, 7, 3), 2))
    real, calls = iio.imwrite, []

    def imwrite(f, img, **kwargs):   # utils.save_image writes into the file it opened
        calls.append(f)
        if len(calls) > 2:
            f.write(b'\x89PNG partial')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(f, img, **kwargs)
    monkeypatch.setattr(iio, 'imwrite', imwrite)
    code = mod.main(['--model', 'bicubic', '--scale', '2', '--datapath', str(folders / 'lr'), '--save',
                     '--savepath', str(folders / 'out')])
    err = capsys.readouterr().err
    assert code == 1
    out = folders / 'out' / 'bicubic_x2'
    assert sorted(os.listdir(out)) == ['a.png', 'bx2.png']     # no partial or temporary file
    lines = [line for line in err.replace('\r', '\n').splitlines() if line.startswith('error:')]
    assert lines == ['error: cannot save %s (No space left on device); stopped: the 2 images saved before it are '
                     'kept in %s, no metrics written' % (out / 'c.png', out)]


def test_metrics_csv_per_job(tmp_path):
    """Two jobs (two LR folders) into the same --savepath keep both CSVs; each row records its job."""
    hr = tmp_path / 'hr'
    lrs = [tmp_path / 'Set5' / 'X2', tmp_path / 'Set14' / 'X2']   # the same last name
    for folder in [hr] + lrs:
        folder.mkdir(parents=True)
    for i, name in enumerate(('a', 'b')):
        utils.save_image(str(hr / (name + '.png')), random_image((20, 20, 3), i))
        for j, lr in enumerate(lrs):
            utils.save_image(str(lr / (name + '.png')), random_image((10, 10, 3), 10 * j + i))
    for lr in lrs:
        res = script('--model', 'bicubic', '--scale', 2, '--datapath', lr, '--labelpath', hr, '--savepath',
                     tmp_path / 'out')
        assert res.returncode == 0, res.stderr
    out = tmp_path / 'out' / 'bicubic_x2'
    names = sorted(os.listdir(out))
    assert len(names) == 2
    assert re.fullmatch(r'metrics_Set14-X2_bicubic_[0-9a-f]{8}\.csv', names[0]), names
    assert re.fullmatch(r'metrics_Set5-X2_bicubic_[0-9a-f]{8}\.csv', names[1]), names
    for name, lr in zip(names, lrs[::-1]):
        rows = read_csv(out / name)
        assert [r['image'] for r in rows] == ['a.png', 'b.png', 'mean']
        assert all(r['datapath'] == str(lr) and r['labelpath'] == str(hr) and r['model'] == 'bicubic'
                   and r['scale'] == '2' and r['checkpoint'] == r['weights'] == '' for r in rows)


# ---------------------------------------------------------------- sizes: bombs, memory, tiny inputs

def png_header(width, height, bitdepth=16, colour=2):
    """A PNG whose header declares width x height (and a few bytes of data): a decompression bomb."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    ihdr = struct.pack('>IIBBBBB', width, height, bitdepth, colour, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b'')


def tiff_header(width, height, order='<'):
    """A TIFF whose first image declares width x height x 3 bytes, without its pixels."""
    import struct
    magic = b'II*\x00' if order == '<' else b'MM\x00*'
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (277, 3, 1, 3)]
    ifd = struct.pack(order + 'H', len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack(order + 'HHI', tag, kind, count) + (struct.pack(order + 'I', value) if kind == 4
                                                               else struct.pack(order + 'HH', value, 0))
    return magic + struct.pack(order + 'I', 8) + ifd + struct.pack(order + 'I', 0)


def jpeg_header(width, height):
    import struct
    app0 = b'\xff\xe0' + struct.pack('>H', 16) + b'JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00'
    sof = b'\xff\xc0' + struct.pack('>HBHHB', 17, 8, height, width, 3) + b'\x01\x11\x00\x02\x11\x00\x03\x11\x00'
    return b'\xff\xd8' + app0 + b'\xff\xff' + sof + b'\xff\xd9'


@pytest.mark.parametrize('name, data, size', [
    ('bomb16.png', png_header(15000, 15000), (15000, 15000)),
    ('bomb.tif', tiff_header(13000, 13000), (13000, 13000)),
    ('bomb_be.tiff', tiff_header(9500, 9500, '>'), (9500, 9500)),
    ('bomb.jpg', jpeg_header(12000, 9000), (9000, 12000)),
])
def test_decompression_bomb_is_refused_from_its_header(tmp_path, monkeypatch, name, data, size):
    import imageio.v3 as iio
    import png
    path = tmp_path / name
    path.write_bytes(data)
    assert utils.image_size(str(path)) == size

    def no_decoding(*args, **kwargs):
        raise AssertionError('decoded a decompression bomb')
    monkeypatch.setattr(iio, 'imread', no_decoding)
    monkeypatch.setattr(png, 'Reader', no_decoding)
    with pytest.raises(utils.ImageError, match=r'%s: its header declares %dx%d pixels, more than the 89478485 an '
                                               r'image may have \(MAX_PIXELS\); not decoded'
                                               % (path, size[1], size[0])):
        utils.read_image(str(path))


@pytest.mark.parametrize('ext, shape, dtype', [
    ('png', (13, 21, 3), np.uint8), ('png', (6, 10, 4), np.uint16), ('png', (7, 9), np.uint8),
    ('jpg', (13, 21, 3), np.uint8), ('bmp', (7, 9, 3), np.uint8), ('bmp', (5, 11, 4), np.uint8),
    ('tif', (6, 10, 3), np.uint16), ('tiff', (5, 11, 4), np.uint8), ('webp', (13, 21, 3), np.uint8),
    ('webp', (5, 11, 4), np.uint8)])
def test_image_size_reads_the_header_of_every_format(tmp_path, ext, shape, dtype):
    path = str(tmp_path / ('x.' + ext))
    utils.save_image(path, random_image(shape, 0, dtype))
    assert utils.image_size(path) == shape[:2] == utils.read_image(path).shape[:2]
    if ext == 'webp':   # lossy (VP8) and extended (VP8X) headers too; save_image writes lossless (VP8L)
        from PIL import Image
        Image.fromarray(random_image(shape, 1, dtype)).save(path, 'WEBP', quality=80)
        assert open(path, 'rb').read(16)[12:16] == (b'VP8X' if shape[2:] == (4,) else b'VP8 ')
        assert utils.image_size(path) == shape[:2] == utils.read_image(path).shape[:2]
    (tmp_path / 'short.png').write_bytes(open(path, 'rb').read()[:20])
    with pytest.raises(utils.ImageError, match='cannot read image'):
        utils.image_size(str(tmp_path / 'short.png'))


def test_bombs_and_images_too_large_for_memory_fail_alone(folders, monkeypatch, capsys):
    """A bomb and an image whose result would not fit in memory each get one line; the others run."""
    mod = load_script_module()
    (folders / 'lr' / 'bomb.png').write_bytes(png_header(15000, 15000))
    utils.save_image(str(folders / 'lr' / 'large.png'), random_image((64, 64, 3), 4))
    monkeypatch.setattr(memory, 'available_memory', lambda: 1 << 20)   # 1 MB free
    code = mod.main(['--model', 'bicubic', '--scale', '2', '--datapath', str(folders / 'lr'), '--save',
                     '--savepath', str(folders / 'out')])
    err = capsys.readouterr().err.replace('\r', '\n').splitlines()
    assert code == 1
    assert sorted(os.listdir(folders / 'out' / 'bicubic_x2')) == ['a.png', 'bx2.png', 'c.png']
    assert [line for line in err if line.startswith('error:')] == [
        'error: %s: its header declares 15000x15000 pixels, more than the 89478485 an image may have (MAX_PIXELS); '
        'not decoded' % (folders / 'lr' / 'bomb.png'),
        'error: %s: LR 64x64 at x2 gives 128x128 pixels, which need about 2 MB of memory, and 1 MB are free for '
        'them' % (folders / 'lr' / 'large.png'),
        'error: 2 of 5 images failed (see above)']


def test_images_too_small_to_score(folders):
    """PSNR / SSIM need 11x11 pixels after the shave: a 7x7 LR at x2 is refused before any work on it,
    and an HR image a few pixels short leaves too little to score: one line each, the others run."""
    hr = folders / 'hr'
    for name in os.listdir(hr):
        os.remove(hr / name)
    os.remove(folders / 'lr' / 'c.png')
    utils.save_image(str(folders / 'lr' / 'a.png'), random_image((7, 9, 3), 0))     # 7 < 8: too small
    utils.save_image(str(folders / 'lr' / 'bx2.png'), random_image((8, 8, 3), 0))
    utils.save_image(str(hr / 'a.png'), random_image((14, 18, 3), 1))
    utils.save_image(str(hr / 'b.png'), random_image((14, 14, 3), 1))                # 2 short of 16
    utils.save_image(str(folders / 'lr' / 'd.png'), random_image((9, 9, 3), 2))
    utils.save_image(str(hr / 'd.png'), random_image((18, 18, 3), 3))
    res = script('--model', 'bicubic', '--scale', 2, '--datapath', folders / 'lr', '--labelpath', hr,
                 '--savepath', folders / 'out')
    no_traceback(res)
    assert res.returncode == 1
    assert errors(res)[:2] == [
        'error: %s: LR 9x7 is smaller than 8x8 pixels (PSNR / SSIM need 11x11 pixels once 2 are shaved from every '
        'border; --ref 0 skips scoring)' % (folders / 'lr' / 'a.png'),
        'error: bx2.png: cannot score (window shape cannot be larger than input array shape)']
    assert [r['image'] for r in job_csv(folders / 'out' / 'bicubic_x2')] == ['d.png', 'mean']
