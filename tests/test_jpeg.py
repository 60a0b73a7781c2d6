"""JPEG-compressed input: --degrade (the LR patches degraded on the fly in tf.data: seeded, within
its ranges, on LR only; a short training that resumes), the JPEG quality estimate against the quality
Pillow saved at, test.py's note naming the robust model and its CSV column, bench/quality.py --jpeg."""
import csv
import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from conftest import ROOT, make_tfrecord
from generate_Dataset import records
from natsr.training import degradation
import main as sr_main
import utils


def smooth_image(h=32, w=32, seed=0):
    """8-bit RGB values (as float in [0, 1]): a ramp with some texture, as LR patches are."""
    rng = np.random.RandomState(seed)
    ramp = np.add.outer(np.arange(h), np.arange(w))[:, :, None] / float(h + w)
    img = 0.2 + 0.6 * ramp + 0.1 * rng.rand(h, w, 3)
    return np.round(np.clip(img, 0, 1) * 255) / 255.0


def run_apply(spec, image, indices, seed=0):
    d = degradation.parse(spec)
    with tf.Graph().as_default():
        x, i = tf.placeholder(tf.float32, image.shape), tf.placeholder(tf.int64, [])
        out = degradation.apply(d, x, i, seed)
        with tf.Session() as sess:
            return [sess.run(out, {x: image, i: k}) for k in indices]


def jpeg_tf(image, quality):
    with tf.Graph().as_default(), tf.Session() as sess:
        return sess.run(tf.image.adjust_jpeg_quality(tf.constant(image, tf.float32), quality))


@pytest.mark.parametrize('spec, message', [
    ('jpeg:0-50', 'jpeg wants LO-HI with 1 <= LO <= HI <= 100'),
    ('jpeg:60-30', 'jpeg wants LO-HI'),
    ('jpeg:30.5-40', '(integers)'),
    ('noise:0-80', 'noise wants LO-HI with 0.0 <= LO <= HI <= 50.0'),
    ('blur:x', 'blur wants'),
    ('clean:0.5', 'names no degradation'),
    ('jpeg:30-95,clean:1.5', 'clean must be a share in [0, 1]'),
    ('jpeg:30-95,jpeg:40-50', 'jpeg given twice'),
    ('sharpen:1-2', "unknown item 'sharpen:1-2'"),
])
def test_a_bad_spec_is_one_line(spec, message):
    with pytest.raises(ValueError, match=None) as e:
        degradation.parse(spec)
    assert message in str(e.value) and '\n' not in str(e.value)


def test_parse_and_describe():
    assert degradation.parse(None) is None and degradation.parse('none') is None
    d = degradation.parse('jpeg:30-95, noise:0-2, blur:0-0.6, clean:0.3')
    assert d == degradation.Degradation((30, 95), (0.0, 2.0), (0.0, 0.6), 0.3)
    assert degradation.parse('jpeg:75').jpeg == (75, 75)
    assert degradation.parse('jpeg:30-95').clean == degradation.CLEAN
    assert degradation.describe(d) == 'LR degraded (JPEG q30-95, noise sigma 0-2 levels, blur sigma 0-0.6 px; 30 % clean)'


def test_jpeg_is_seeded_and_within_its_range():
    image = smooth_image()
    indices = range(12)
    first, again = run_apply('jpeg:40-60,clean:0', image, indices), run_apply('jpeg:40-60,clean:0', image, indices)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))           # the same seed and index: the same
    other = run_apply('jpeg:40-60,clean:0', image, indices, seed=1)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))      # another seed: other draws
    by_quality = {q: jpeg_tf(image, q) for q in range(1, 101)}
    drawn = set()
    for out in first:
        matches = [q for q, ref in by_quality.items() if np.array_equal(out, ref)]
        assert matches and all(40 <= q <= 60 for q in matches), matches    # exactly a JPEG of a quality in range
        drawn.update(matches)
    assert len(drawn) > 3                                                    # drawn afresh for each example


def test_clean_share_leaves_the_image_as_it_is():
    image = smooth_image(16, 16)
    outs = run_apply('jpeg:50-50,clean:0.5', image, range(300))
    clean = [np.array_equal(o, image.astype(np.float32)) for o in outs]
    assert 0.4 < np.mean(clean) < 0.6
    assert all(c or np.array_equal(o, jpeg_tf(image, 50)) for c, o in zip(clean, outs))


def test_noise_and_blur_within_their_ranges():
    gray = np.full((64, 64, 3), 128 / 255.0)
    for out in run_apply('noise:3-3,clean:0', gray, range(3)):
        levels = (out - gray) * 255
        assert np.allclose(levels, np.round(levels), atol=1e-3)             # rounded to 8 bits
        assert 2.8 < levels.std() < 3.3 and abs(levels.mean()) < 0.2
    stds = [((o - gray) * 255).std() for o in run_apply('noise:0-2,clean:0', gray, range(20))]
    assert max(stds) < 2.2 and min(stds) < max(stds) - 0.5
    dot = np.zeros((15, 15, 3))
    dot[7, 7] = 1.0
    d = degradation.parse('blur:1-1,clean:0')
    with tf.Graph().as_default(), tf.Session() as sess:
        blurred = sess.run(degradation.gaussian_blur(tf.constant(dot, tf.float32), tf.constant(1.0)))
        same = sess.run(degradation.gaussian_blur(tf.constant(dot, tf.float32), tf.constant(0.0)))
    g = np.exp(-0.5 * np.arange(-3, 4) ** 2)
    g /= g.sum()
    assert np.allclose(blurred[4:11, 4:11, 0], np.outer(g, g), atol=1e-6) and np.allclose(same, dot)
    assert d.blur == (1.0, 1.0)
    out = run_apply('blur:1-1,clean:0', smooth_image(), [0])[0]
    assert np.abs(out - smooth_image()).max() > 1 / 255.0


def test_the_dataset_degrades_lr_only_and_anew_each_epoch(tmp_path):
    path = make_tfrecord(str(tmp_path / 'sr.tfrecord'), 'NatSR', 3, 32)
    d = degradation.parse('jpeg:10-90,clean:0')
    with tf.Graph().as_default():
        plain, _ = records.dataset(path, 1, shuffle_buffer=0, repeat=True)
        worse, _ = records.dataset(path, 1, shuffle_buffer=0, repeat=True,
                                   degrade=lambda image, i: degradation.apply(d, image, i, 0))
        a = tf.data.make_one_shot_iterator(plain).get_next()
        b = tf.data.make_one_shot_iterator(worse).get_next()
        with tf.Session() as sess:
            pairs = [sess.run([a, b]) for _ in range(6)]                    # two epochs of 3 records
    for (lr, hr), (lr_d, hr_d) in pairs:
        assert np.array_equal(hr, hr_d)                                    # HR: never touched
        assert not np.array_equal(lr, lr_d)
    assert not np.array_equal(pairs[0][1][0], pairs[3][1][0])              # record 0, epoch 2: a new draw
    assert np.array_equal(pairs[0][0][0], pairs[3][0][0])


def test_training_with_degrade_runs_and_resumes(tmp_path, capsys):
    path = make_tfrecord(str(tmp_path / 'sr.tfrecord'), 'NatSR', 2, 16)
    args = ['--model', 'FRSR', '--tfrecord_path', path, '--batch_size', '2', '--checkpoint_dir', str(tmp_path / 'ck'),
            '--summary_interval', '2', '--checkpoint_interval', '1', '--degrade', 'jpeg:30-95,noise:0-2']
    assert sr_main.main(args + ['--max_steps', '2']) == 0
    out = capsys.readouterr().out
    assert 'LR degraded (JPEG q30-95, noise sigma 0-2 levels; 20 % clean)' in out
    assert sr_main.main(args + ['--max_steps', '3']) == 0
    out = capsys.readouterr().out
    assert 'resumed from' in out and 'model-2' in out
    assert os.path.exists(str(tmp_path / 'ck' / 'FRSR_x4_trial0' / 'model-3.index'))
    assert sr_main.main(args[:-1] + ['jpeg:5-200', '--max_steps', '4']) == 2
    err = capsys.readouterr().err
    assert "--degrade 'jpeg:5-200': jpeg wants LO-HI" in err and 'Traceback' not in err


def five_photos():
    import skimage.data
    return [getattr(skimage.data, n)() for n in ('astronaut', 'coffee', 'chelsea', 'camera', 'rocket')]


def test_the_quality_estimate_matches_what_pillow_saved(tmp_path):
    saved = []
    for img, q in zip(five_photos(), (35, 52, 68, 83, 95)):
        path = str(tmp_path / ('q%d.jpg' % q))
        Image.fromarray(img).save(path, quality=q)
        saved.append((path, q))
    for path, q in saved:
        assert abs(utils.jpeg_quality(path) - q) <= 5, (path, utils.jpeg_quality(path))
    Image.fromarray(five_photos()[0]).save(str(tmp_path / 'a.png'))
    (tmp_path / 'b.jpg').write_text('not a jpeg')
    assert utils.jpeg_quality(str(tmp_path / 'a.png')) is None and utils.jpeg_quality(str(tmp_path / 'b.jpg')) is None


def test_test_py_names_the_robust_model_and_records_the_quality(tmp_path):
    lr = tmp_path / 'lr'
    lr.mkdir()
    photo = five_photos()[2][100:140, 100:140]
    Image.fromarray(photo).save(str(lr / 'cat.jpg'), quality=60)
    Image.fromarray(photo).save(str(lr / 'cat2.png'))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')

    def run(model):
        return subprocess.run([sys.executable, os.path.join(ROOT, 'test.py'), '--datapath', str(lr), '--model', model,
                               '--metrics', 'niqe', '--savepath', str(tmp_path / 'out')],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    res = run('FRSR')
    assert res.returncode == 0, res.stderr[-2000:]
    notes = [line for line in res.stdout.splitlines() if 'FRSR_jpeg' in line]
    assert notes == ['note: 1 of 2 inputs is a JPEG below quality 90 (cat.jpg q60): FRSR_jpeg keeps more of its '
                     'gain on such input (--model FRSR_jpeg)']
    folder = tmp_path / 'out' / 'FRSR'
    csv_file = [f for f in os.listdir(str(folder)) if f.endswith('.csv')][0]
    with open(str(folder / csv_file), newline='') as f:
        rows = {r['image']: r for r in csv.DictReader(f)}
    assert rows['cat.jpg']['jpeg_quality'] == '60' and rows['cat2.png']['jpeg_quality'] == ''
    assert rows['mean']['jpeg_quality'] == ''
    res = run('FRSR_jpeg')
    assert res.returncode == 0 and 'note: ' not in res.stdout, res.stdout + res.stderr[-2000:]


def test_bench_quality_jpeg_sets(tmp_path):
    """with_jpeg: each set followed by its LR saved at each quality, decoded as Pillow does."""
    sys.path.insert(0, os.path.join(ROOT, 'bench'))
    try:
        import quality
    finally:
        sys.path.pop(0)
    hr = five_photos()[0][:64, :64]
    lr = hr[::4, ::4].copy()
    sets = quality.with_jpeg({'Set5': [('a', hr, lr)]}, [60, 90])
    assert list(sets) == ['Set5', 'Set5 q90', 'Set5 q60']
    buf = io.BytesIO()
    Image.fromarray(lr).save(buf, 'JPEG', quality=60)
    assert np.array_equal(sets['Set5 q60'][0][2], np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert('RGB')))
    assert sets['Set5 q90'][0][1] is hr and quality.clean_set('Set5 q60') == 'Set5'
    assert quality.jpeg_crop_set(sets) == 'Set5 q60'
    with pytest.raises(ValueError, match='--jpeg: give comma-separated JPEG qualities'):
        quality.parse_qualities('60,101')
