"""The three training stages on tiny TFRecords: losses, frozen parts, checkpoints, resume,
curriculum, NaN guard, bad inputs, export; faults: a missing or garbled index, a damaged
checkpoint, a damaged TFRecord, a full disk; pruning."""
import errno
import glob
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from conftest import make_tfrecord, random_checkpoint
from natsr import checkpoints
from natsr import device
from natsr.training import loop
import config
import main as sr_main
import train
from natsr.training import trials
from model import FRACTAL, NMD
from Train_NMD import config as nmd_config
from Train_NMD import main as nmd_main
from Train_NMD import train as nmd_train
from Train_NMD.degrade import inject_dct, blur, dct_matrix

PATCH = 16


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp('data')
    return {
        'sr': make_tfrecord(str(d / 'sr.tfrecord'), 'NatSR', 2, PATCH),     # 2 patches, batch 2: one repeated batch
        'sr_x2': make_tfrecord(str(d / 'sr2.tfrecord'), 'NatSR', 2, PATCH, scale=2),
        'nmd': make_tfrecord(str(d / 'nmd.tfrecord'), 'NMD', 8, PATCH),
        'nmd_val': make_tfrecord(str(d / 'nmd_val.tfrecord'), 'NMD', 4, PATCH, seed=1),
    }


def sr_args(data, ckpt, *extra):   # no --patch_size: the TFRecord's sidecar gives it
    return ['--tfrecord_path', data['sr'], '--batch_size', '2',
            '--checkpoint_dir', str(ckpt), '--summary_interval', '2', '--checkpoint_interval', '100'] + list(extra)


def nmd_args(data, ckpt, *extra):
    return ['--tfrecord_path', data['nmd'], '--val_tfrecord_path', data['nmd_val'], '--batch_size', '4',
            '--checkpoint_dir', str(ckpt), '--val_interval', '1', '--summary_interval', '2'] + list(extra)


def values(prefix, scope=''):
    r = tf.train.load_checkpoint(prefix)
    return {k: r.get_tensor(k) for k in r.get_variable_to_shape_map() if k.startswith(scope) and 'Adam' not in k}


def changed(before, after):
    return sorted(k for k in before if not np.array_equal(before[k], after[k]))


# --- losses -----------------------------------------------------------------------------

def test_ragan_losses_equal_numpy():
    real = np.array([[1.5], [-0.3], [0.2], [2.0]], np.float32)
    fake = np.array([[-1.0], [0.4], [0.1], [-2.2]], np.float32)
    sp = lambda z: np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0)   # softplus
    bce = lambda z, y: np.mean(y * sp(-z) + (1 - y) * sp(z))
    d_real, d_fake = real - fake.mean(), fake - real.mean()
    want_d = bce(d_real, 1) + bce(d_fake, 0)
    want_g = bce(d_fake, 1) + bce(d_real, 0)
    with tf.Graph().as_default(), tf.Session() as sess:
        got_d, got_g = sess.run(train.ragan_losses(tf.constant(real), tf.constant(fake)))
    assert abs(got_d - want_d) < 1e-6 and abs(got_g - want_g) < 1e-6


def test_learning_rate_schedule():
    args = loop.config_parser(config, '').parse_args([])
    with tf.Graph().as_default(), tf.Session() as sess:
        step = tf.placeholder(tf.int64, [])
        rate = train.learning_rate(step, args)
        got = [sess.run(rate, {step: s}) for s in (0, 99999, 100000, 250000, 10 ** 6)]
    np.testing.assert_allclose(got, [2e-4, 2e-4, 1e-4, 1e-4, 1e-4], rtol=1e-6)


# --- NMD degradations and curriculum ----------------------------------------------------

def blocks_dct(x):
    n, h, w, c = x.shape
    b = x.reshape(n, h // 8, 8, w // 8, 8, c).transpose(0, 1, 3, 5, 2, 4)
    d = dct_matrix()
    return d @ b @ d.T


def test_inject_dct_touches_only_last_row_and_column_with_requested_std():
    rng = np.random.RandomState(0)
    x = rng.rand(4, 32, 48, 3).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        ph, sigma = tf.placeholder(tf.float32, [None, None, None, 3]), tf.placeholder(tf.float32, [])
        y = inject_dct(ph, sigma, seed=1)
        noisy, same = sess.run(y, {ph: x, sigma: 0.3}), sess.run(y, {ph: x, sigma: 0.0})
    np.testing.assert_allclose(same, x, atol=1e-5)                       # sigma 0: identity
    delta = blocks_dct(noisy.astype(np.float64)) - blocks_dct(x.astype(np.float64))
    assert np.abs(delta[..., :7, :7]).max() < 1e-5                        # rows/cols 0..6 untouched
    edge = np.concatenate([delta[..., 7, :].ravel(), delta[..., :7, 7].ravel()])   # 15 per block
    assert edge.size == 4 * 4 * 6 * 3 * 15
    assert abs(edge.std() - 0.3) < 0.02 and abs(edge.mean()) < 0.02
    # the corner coefficient (7, 7) gets one draw, not two: same std as the others
    assert abs(delta[..., 7, 7].std() - 0.3) < 0.05


def test_blur_interpolates():
    hr, ilr = np.full((1, 8, 8, 3), 0.8, np.float32), np.full((1, 8, 8, 3), 0.2, np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        out = sess.run(blur(tf.constant(hr), tf.constant(ilr), 0.7))
    np.testing.assert_allclose(out, 0.7 * 0.8 + 0.3 * 0.2, rtol=1e-6)


def test_curriculum_rule():
    args = loop.config_parser(nmd_config, '').parse_args(['--acc_window', '3'])
    step = lambda s, a, nh, bh, an, ab: nmd_train.curriculum_update(s, a, nh, bh, an, ab, args)
    # window not full: nothing moves even at 100 %
    assert step(0.1, 0.5, [100], [], 100, 50)[:2] == (0.1, 0.5)
    # full window, mean exactly 95 (>=, not ==): sigma x 0.8, window restarts; blur mean 94.9: no move
    s, a, nh, bh = step(0.1, 0.5, [94, 96], [94.9, 94.9], 95, 94.9)
    assert s == pytest.approx(0.08) and a == 0.5 and nh == [] and bh == [94.9] * 3
    # alpha rises by 0.1 and stops at 0.9
    assert step(0.1, 0.5, [], [99, 99], 0, 99)[1] == pytest.approx(0.6)
    assert step(0.1, 0.85, [], [99, 99], 0, 99)[1] == pytest.approx(0.9)
    assert step(0.1, 0.9, [], [99, 99], 0, 99)[1] == pytest.approx(0.9)
    # only the last `window` accuracies count
    assert step(0.1, 0.5, [10, 100, 100], [], 96, 0)[0] == pytest.approx(0.08)


# --- FRSR -------------------------------------------------------------------------------

def test_frsr_trains_only_gen_saves_restores_and_resumes(data, tmp_path):
    ck = tmp_path / 'ck'
    assert sr_main.main(sr_args(data, ck, '--model', 'FRSR', '--max_steps', '3', '--checkpoint_interval', '1')) == 0
    trial = ck / 'FRSR_x4_trial0'
    for s in (1, 2, 3):
        assert (trial / ('model-%d.index' % s)).exists()
    assert any(f.startswith('events.out.tfevents') for f in os.listdir(trial))
    first, third = values(str(trial / 'model-1')), values(str(trial / 'model-3'))
    counters = {'global_step', 'beta1_power', 'beta2_power'}
    assert set(changed(first, third)) == {k for k in first if k.startswith('GEN/')} | counters  # GEN alone moved
    # the L1 loss falls on the repeated batch
    _, losses = train.train(loop.config_parser(config, '').parse_args(
        sr_args(data, ck, '--model', 'FRSR', '--max_steps', '12')))
    assert losses['l1'] < train_l1_at(str(trial / 'model-1'), data)


def train_l1_at(prefix, data):
    """L1 of the checkpoint `prefix` on the tiny data set's batch."""
    from generate_Dataset import records
    with tf.Graph().as_default():
        ds, _ = records.dataset(data['sr'], 2, shuffle_buffer=0, repeat=False)
        lr, hr = tf.data.make_one_shot_iterator(ds).get_next()
        l1 = tf.reduce_mean(tf.abs(FRACTAL(lr, 4).output - hr))
        with tf.Session() as sess:
            tf.train.Saver(tf.global_variables('GEN/')).restore(sess, prefix)
            return sess.run(l1)


def test_frsr_x2_x3_start_from_the_x4_weights_that_fit(data, tmp_path, capsys):
    x4 = random_checkpoint(str(tmp_path / 'FRSR'), lambda x: FRACTAL(x, 4), 'GEN')
    source = values(x4, 'GEN/')
    x3 = make_tfrecord(str(tmp_path / 'sr3.tfrecord'), 'NatSR', 2, 18, scale=3)
    for scale, record, patch, fresh in ((2, data['sr_x2'], PATCH, set()),
                                        (3, x3, 18, {'GEN/conv_up1/conv2d/kernel', 'GEN/conv_up1/conv2d/bias'})):
        ck = tmp_path / ('ck%d' % scale)
        args = ['--model', 'FRSR', '--scale', str(scale), '--tfrecord_path', record, '--patch_size', str(patch),
                '--batch_size', '2', '--checkpoint_dir', str(ck), '--max_steps', '1', '--init_checkpoint', x4,
                '--learning_rate', '0', '--lr_min', '0']           # a step that moves nothing: model-1 = start
        assert sr_main.main(args) == 0
        start = values(str(ck / ('FRSR_x%d_trial0' % scale) / 'model-1'), 'GEN/')
        same = {k for k in start if k in source and np.array_equal(start[k], source[k])}
        assert set(start) - same == fresh            # x2: every layer fits (conv_up2 is dropped); x3: conv_up1 differs
        out = capsys.readouterr().out
        assert ('from scratch: conv_up1' in out) == bool(fresh)
    assert sr_main.main(['--model', 'FRSR', '--tfrecord_path', data['sr'], '--patch_size', str(PATCH),
                         '--checkpoint_dir', str(tmp_path / 'bad'), '--max_steps', '0',
                         '--init_checkpoint', random_checkpoint(str(tmp_path / 'NMD'), NMD, 'CLASSIFIER')]) == 2
    assert 'holds none of the GEN weights' in capsys.readouterr().err


def test_resume_continues_step_and_learning_rate(data, tmp_path):
    sched = ['--model', 'FRSR', '--lr_decay_steps', '2', '--lr_min', '1e-9']
    assert sr_main.main(sr_args(data, tmp_path / 'a', *sched, '--max_steps', '5')) == 0
    assert sr_main.main(sr_args(data, tmp_path / 'b', *sched, '--max_steps', '3')) == 0
    assert sr_main.main(sr_args(data, tmp_path / 'b', *sched, '--max_steps', '5')) == 0
    a, b = tmp_path / 'a' / 'FRSR_x4_trial0', tmp_path / 'b' / 'FRSR_x4_trial0'
    assert tf.train.latest_checkpoint(str(a)).endswith('model-5')
    assert tf.train.latest_checkpoint(str(b)).endswith('model-5')
    for d in (a, b):
        r = tf.train.load_checkpoint(str(d / 'model-5'))
        assert r.get_tensor('global_step') == 5
        # Adam's bias-correction counter (starts at beta1) proves 5 updates, not 3 + a fresh 2
        assert r.get_tensor('beta1_power') == pytest.approx(0.9 ** 6, rel=1e-5)
    args = loop.config_parser(config, '').parse_args(sched)
    with tf.Graph().as_default(), tf.Session() as sess:
        assert sess.run(train.learning_rate(tf.constant(5, tf.int64), args)) == pytest.approx(2e-6)
    # --step picks an older checkpoint of the trial
    assert sr_main.main(sr_args(data, tmp_path / 'b', *sched, '--max_steps', '6', '--step', '3')) == 0
    assert tf.train.load_checkpoint(str(b / 'model-6')).get_tensor('global_step') == 6


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path, capsys):
    ck = tmp_path / 'ck'
    code = sr_main.main(sr_args(data, ck, '--model', 'FRSR', '--max_steps', '30', '--learning_rate', '1e30',
                                '--lr_min', '1e30', '--checkpoint_interval', '1'))
    err = capsys.readouterr().err
    assert code == 2 and 'training stopped' in err and 'Traceback' not in err
    last = tf.train.latest_checkpoint(str(ck / 'FRSR_x4_trial0'))
    assert last is not None and int(last.rsplit('-', 1)[1]) < 30
    for v in values(last).values():
        assert np.all(np.isfinite(v))


@pytest.mark.parametrize('extra, message', [
    (['--tfrecord_path', '/nonexistent.tfrecord'], 'TFRecord not found'),
    (['--patch_size', '32'], 'holds 16-pixel HR patches, --patch_size is 32 (leave --patch_size out'),
    (['--scale', '2'], 'made for x4'),
])
def test_bad_training_inputs(data, tmp_path, capsys, extra, message):
    assert sr_main.main(sr_args(data, tmp_path, '--model', 'FRSR', '--max_steps', '1', *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err


def test_patch_size_flag_defaults_to_the_sidecar(data, tmp_path, capsys):
    """config.PATCH_SIZE is the paper's 192; the flag's default is the TFRecord's side (every FRSR
    test here trains 16-pixel patches without --patch_size); a matching value is accepted."""
    for module in (config, nmd_config):
        parser = loop.config_parser(module, '')
        assert parser.parse_args([]).patch_size is None
        assert parser.parse_args(['--patch_size', '96']).patch_size == 96
    assert "default: the TFRecord's" in ' '.join(loop.config_parser(config, '').format_help().split())
    assert config.PATCH_SIZE == 192
    assert sr_main.main(sr_args(data, tmp_path, '--model', 'FRSR', '--max_steps', '1',
                                '--patch_size', str(PATCH))) == 0
    assert tf.train.latest_checkpoint(str(tmp_path / 'FRSR_x4_trial0')).endswith('model-1')
    assert nmd_main.main(nmd_args(data, tmp_path, '--max_steps', '0', '--patch_size', '32')) == 2
    assert 'nmd.tfrecord: holds 16-pixel HR patches, --patch_size is 32' in capsys.readouterr().err


def test_missing_sidecar_and_wrong_kind(data, tmp_path, capsys):
    lonely = tmp_path / 'x.tfrecord'
    lonely.write_bytes(open(data['sr'], 'rb').read())
    assert sr_main.main(sr_args(data, tmp_path, '--model', 'FRSR', '--tfrecord_path', str(lonely))) == 2
    assert 'sidecar not found' in capsys.readouterr().err
    assert sr_main.main(sr_args(data, tmp_path, '--model', 'FRSR', '--tfrecord_path', data['nmd'])) == 2
    assert 'generate_NatSR.py' in capsys.readouterr().err


# --- NatSR ------------------------------------------------------------------------------

def test_natsr_d_step_then_g_step_with_frozen_nmd(data, tmp_path, capsys):
    frsr = random_checkpoint(str(tmp_path / 'FRSR'), lambda x: FRACTAL(x, 4), 'GEN')
    nmd = random_checkpoint(str(tmp_path / 'NMD'), NMD, 'CLASSIFIER')
    frsr_x2 = random_checkpoint(str(tmp_path / 'FRSR_x2'), lambda x: FRACTAL(x, 2), 'GEN')
    args = loop.config_parser(config, '').parse_args(sr_args(
        data, tmp_path / 'ck', '--max_steps', '1', '--frsr_checkpoint', frsr, '--nmd_checkpoint', nmd))

    # graph structure: each optimizer updates its own network only
    with tf.Graph().as_default():
        lr = tf.placeholder(tf.float32, [2, 4, 4, 3])
        hr = tf.placeholder(tf.float32, [2, PATCH, PATCH, 3])
        t = train.stage(args).build(lr, hr)
        applied = {}
        for op in tf.get_default_graph().get_operations():
            if op.type == 'ResourceApplyAdam':
                applied.setdefault(op.name.split('/')[0], set()).add(op.inputs[0].op.name.split('/')[0])
        assert applied == {'Adam_D': {'DIS'}, 'Adam': {'GEN'}}
        feed = {lr: np.random.rand(2, 4, 4, 3), hr: np.random.rand(2, PATCH, PATCH, 3)}
        scopes = ('GEN/', 'DIS/', 'CLASSIFIER/')
        snap = lambda sess: {s: sess.run(tf.trainable_variables(s)) for s in scopes}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            s0 = snap(sess)
            sess.run(t.outputs['d_train'], feed)          # the D step alone: DIS moves, GEN and NMD do not
            s1 = snap(sess)
            sess.run(t.train_op, feed)         # a whole iteration: GEN moves, NMD still frozen
            s2 = snap(sess)
        same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(a, b))
        assert not same(s0['DIS/'], s1['DIS/']) and same(s0['GEN/'], s1['GEN/'])
        assert not same(s1['GEN/'], s2['GEN/'])
        assert same(s0['CLASSIFIER/'], s1['CLASSIFIER/']) and same(s0['CLASSIFIER/'], s2['CLASSIFIER/'])

    # the trainer: GEN starts from FRSR, CLASSIFIER from the NMD and stays as it was
    _, losses = train.train(args)
    assert set(losses) == {'l1', 'nat', 'g_gan', 'd'}
    ckpt = tf.train.latest_checkpoint(str(tmp_path / 'ck' / 'NatSR_x4_trial0'))
    after, start = values(ckpt), values(nmd)
    for k in start:
        np.testing.assert_array_equal(after[k], start[k])
    assert tf.train.load_checkpoint(ckpt).get_tensor('global_step') == 1   # counted once per iteration
    # a wrong-scale FRSR or a missing NMD is a clear error
    capsys.readouterr()
    assert sr_main.main(sr_args(data, tmp_path / 'ck2', '--max_steps', '1', '--frsr_checkpoint', frsr_x2,
                                '--nmd_checkpoint', nmd)) == 2
    assert 'wrong scale' in capsys.readouterr().err
    assert sr_main.main(sr_args(data, tmp_path / 'ck2', '--max_steps', '1', '--frsr_checkpoint', frsr,
                                '--nmd_checkpoint', str(tmp_path / 'none'))) == 2
    assert 'NMD checkpoint not found' in capsys.readouterr().err


def test_natsr_same_seed_same_checkpoint(data, tmp_path):
    """Two NatSR runs with the same --seed and --deterministic end with the same checkpoint, every
    tensor (DIS's `u` and the Adam slots included): the four DIS evaluations of an iteration read and
    update each spectral-norm `u` in the order they were built (ops.spectral_norm), and Grappler,
    whose rewrites of the NatSR graph differ from one session to the next, is off (docs/training.md,
    "Reproducibility")."""
    frsr = random_checkpoint(str(tmp_path / 'FRSR'), lambda x: FRACTAL(x, 4), 'GEN')
    nmd = random_checkpoint(str(tmp_path / 'NMD'), NMD, 'CLASSIFIER')
    ends = []
    for run in ('a', 'b'):
        assert sr_main.main(sr_args(data, tmp_path / run, '--max_steps', '2', '--seed', '3', '--deterministic',
                                    '--frsr_checkpoint', frsr, '--nmd_checkpoint', nmd)) == 0
        reader = tf.train.load_checkpoint(str(tmp_path / run / 'NatSR_x4_trial0' / 'model-2'))
        ends.append({k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()})
    a, b = ends
    assert sorted(a) == sorted(b) and 'DIS/conv1_1/u' in a and 'DIS/conv6_1/kernel/Adam_D' in a
    assert changed(a, b) == []


def test_deterministic_turns_grappler_off_and_needs_fp32():
    assert device.session_config(deterministic=True).graph_options.rewrite_options.disable_meta_optimizer
    assert not device.session_config().graph_options.rewrite_options.disable_meta_optimizer
    with pytest.raises(device.PrecisionError, match='--deterministic needs --precision fp32'):
        device.session_config('bf16', deterministic=True)


def test_natsr_ema_of_gen_weights_resumes_and_is_exported(data, tmp_path, capsys):
    frsr = random_checkpoint(str(tmp_path / 'FRSR'), lambda x: FRACTAL(x, 4), 'GEN')
    nmd = random_checkpoint(str(tmp_path / 'NMD'), NMD, 'CLASSIFIER')
    run = lambda steps, *extra: sr_main.main(sr_args(     # noqa: E731
        data, tmp_path / 'ck', '--max_steps', str(steps), '--frsr_checkpoint', frsr, '--nmd_checkpoint', nmd,
        '--ema_decay', '0.75', '--checkpoint_interval', '1', *extra))
    assert run(2) == 0
    trial = tmp_path / 'ck' / 'NatSR_x4_trial0'
    w0, w1, w2 = values(frsr, 'GEN/'), values(str(trial / 'model-1'), 'GEN/'), values(str(trial / 'model-2'), 'GEN/')
    ema = lambda prefix: checkpoints.moving_averages(str(prefix), 'GEN')  # noqa: E731
    name = 'GEN/conv_out/conv2d/kernel'
    # the average starts at the FRSR weights: a1 = d w0 + (1 - d) w1, a2 = d a1 + (1 - d) w2
    a1 = 0.75 * w0[name] + 0.25 * w1[name]
    np.testing.assert_allclose(ema(trial / 'model-1')[name], a1, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ema(trial / 'model-2')[name], 0.75 * a1 + 0.25 * w2[name], rtol=1e-5, atol=1e-7)
    assert set(ema(trial / 'model-2')) == {k for k in w2 if not k.endswith('/ExponentialMovingAverage')}
    assert run(3) == 0                                   # resumes: the average continues from step 2's
    a3 = 0.75 * ema(trial / 'model-2')[name] + 0.25 * values(str(trial / 'model-3'), 'GEN/')[name]
    np.testing.assert_allclose(ema(trial / 'model-3')[name], a3, rtol=1e-5, atol=1e-7)
    # --export ships the average; a run without --ema_decay exports its weights as they are
    capsys.readouterr()
    assert run(3, '--export', str(tmp_path / 'NatSR')) == 0
    assert 'moving average' in capsys.readouterr().out
    np.testing.assert_array_equal(values(str(tmp_path / 'NatSR'))[name], ema(trial / 'model-3')[name])
    import json   # recorded like any export, so pruning keeps the checkpoint it came from
    assert json.load(open(trial / 'exported.json')) == {'model-3': [str(tmp_path / 'NatSR')]}
    assert checkpoints.moving_averages(frsr, 'GEN') is None
    # --export_raw ships the weights themselves
    assert run(3, '--export', str(tmp_path / 'NatSR_raw'), '--export_raw') == 0
    assert 'moving average' not in capsys.readouterr().out
    np.testing.assert_array_equal(values(str(tmp_path / 'NatSR_raw'))[name], values(str(trial / 'model-3'))[name])


def test_grid_loss_sees_only_a_period_pattern_of_the_error():
    rng = np.random.RandomState(4)
    hr = rng.rand(2, 16, 16, 3).astype(np.float32)
    dots = np.zeros((2, 16, 16, 3), np.float32)
    dots[:, 1::4, 2::4] = 0.16                     # one dot per 4x4 cell: phase means 0.16 at one phase
    with tf.Graph().as_default(), tf.Session() as sess:
        loss = lambda sr: sess.run(train.grid_loss(tf.constant(sr), tf.constant(hr), 4))  # noqa: E731
        assert loss(hr) == 0 and loss(hr + 0.3) == pytest.approx(0, abs=1e-7)   # a constant error: no grid
        assert loss(hr + dots) == pytest.approx((0.15 + 15 * 0.01) / 16, rel=1e-4)  # |0.16 - 0.01|, 15 x 0.01
        noise = rng.permutation(dots.ravel()).reshape(dots.shape)          # same energy, no period
        assert loss(hr + noise) < 0.5 * loss(hr + dots)


def test_export_average_steps_ships_the_mean_of_the_checkpoints(data, tmp_path, capsys):
    run = lambda *extra: sr_main.main(sr_args(data, tmp_path / 'ck', '--model', 'FRSR', *extra))  # noqa: E731
    assert run('--max_steps', '3', '--checkpoint_interval', '1') == 0
    trial = tmp_path / 'ck' / 'FRSR_x4_trial0'
    capsys.readouterr()
    assert run('--export', str(tmp_path / 'FRSR'), '--average_steps', '3,1') == 0
    assert 'the mean of the GEN weights of %s (steps 1, 3)' % trial in capsys.readouterr().out
    one, three, mean = (values(str(p), 'GEN/') for p in (trial / 'model-1', trial / 'model-3', tmp_path / 'FRSR'))
    assert sorted(mean) == sorted(k for k in one if '/Adam' not in k)
    name = 'GEN/conv_out/conv2d/kernel'
    assert not np.array_equal(one[name], three[name])
    np.testing.assert_allclose(mean[name], (one[name].astype(np.float64) + three[name]) / 2, rtol=1e-6)
    with tf.Graph().as_default():
        tf.train.import_meta_graph(str(tmp_path / 'FRSR.meta'))
        assert len(tf.get_collection('InNOut')) == 2
    import json   # both checkpoints are exports now: pruning keeps them
    assert json.load(open(trial / 'exported.json')) == {'model-1': [str(tmp_path / 'FRSR')],
                                                        'model-3': [str(tmp_path / 'FRSR')]}
    assert run('--export', str(tmp_path / 'other'), '--average_steps', '1,5') == 2
    assert 'no checkpoint of step 5 to average (there are: 1, 2, 3)' in capsys.readouterr().err
    assert not (tmp_path / 'other.index').exists()
    with pytest.raises(SystemExit):
        run('--export', str(tmp_path / 'other'), '--average_steps', '3')
    assert 'give at least two steps to average' in capsys.readouterr().err


def test_lf_loss_sees_tone_and_colour_not_detail():
    rng = np.random.RandomState(5)
    hr = rng.rand(2, 16, 16, 3).astype(np.float32)
    checker = np.where((np.arange(16)[:, None] + np.arange(16)) % 2, 0.1, -0.1).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        loss = lambda sr: sess.run(train.lf_loss(tf.constant(sr), tf.constant(hr), 4))  # noqa: E731
        assert loss(hr) == 0
        assert loss(hr - 0.02) == pytest.approx(0.02, rel=1e-4)                # a darker image
        assert loss(hr + checker[None, :, :, None]) == pytest.approx(0, abs=1e-7)  # zero-mean detail per cell
        tint = np.zeros_like(hr)
        tint[..., 2] = 0.03                                                    # a blue cast: 0.03 in 1 of 3
        assert loss(hr + tint) == pytest.approx(0.01, rel=1e-4)


def test_natsr_lf_weight_adds_the_term_to_the_g_loss(data, tmp_path):
    frsr = random_checkpoint(str(tmp_path / 'FRSR'), lambda x: FRACTAL(x, 4), 'GEN')
    nmd = random_checkpoint(str(tmp_path / 'NMD'), NMD, 'CLASSIFIER')
    rng = np.random.RandomState(6)
    feed_lr, feed_hr = rng.rand(2, 4, 4, 3), rng.rand(2, PATCH, PATCH, 3)
    extra = {}
    for weight in ('0', '50'):
        args = loop.config_parser(config, '').parse_args(sr_args(
            data, tmp_path / weight, '--frsr_checkpoint', frsr, '--nmd_checkpoint', nmd, '--lf_weight', weight))
        with tf.Graph().as_default():
            lr = tf.placeholder(tf.float32, [2, 4, 4, 3])
            hr = tf.placeholder(tf.float32, [2, PATCH, PATCH, 3])
            out = train.stage(args).build(lr, hr).outputs
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                o = sess.run({k: out[k] for k in ('g', 'l1', 'nat', 'g_gan')}, {lr: feed_lr, hr: feed_hr})
        extra[weight] = o['g'] - (o['l1'] + args.nat_weight * o['nat'] + args.gan_weight * o['g_gan'])
    assert extra['0'] == pytest.approx(0, abs=1e-6)
    assert extra['50'] > 1e-3        # 50 x the block-mean error of an untrained GEN on random HR


def test_random_shift_crops_every_image_at_its_own_offset():
    x = np.arange(4 * 12 * 12 * 1, dtype=np.float32).reshape(4, 12, 12, 1)
    with tf.Graph().as_default(), tf.Session() as sess:
        tf.set_random_seed(1)
        assert train.random_shift(tf.constant(x), 0).shape.as_list() == [4, 12, 12, 1]
        crops = np.concatenate([sess.run(train.random_shift(tf.constant(x), 4)) for _ in range(5)])
    assert crops.shape == (20, 8, 8, 1)
    offsets = set()
    for c in crops:                      # each crop is a contiguous 8x8 window of one image
        i, rem = divmod(int(c[0, 0, 0]), 144)
        y, x0 = divmod(rem, 12)
        np.testing.assert_array_equal(c, x[i, y:y + 8, x0:x0 + 8])
        offsets.add((y, x0))
    assert len(offsets) > 3 and all(0 <= y <= 4 and 0 <= x0 <= 4 for y, x0 in offsets)


# --- NMD --------------------------------------------------------------------------------

def test_nmd_trains_curriculum_resumes_and_exports(data, tmp_path):
    moving = ['--acc_threshold', '0', '--acc_window', '3']
    assert nmd_main.main(nmd_args(data, tmp_path / 'a', *moving, '--max_steps', '7')) == 0
    assert nmd_main.main(nmd_args(data, tmp_path / 'b', *moving, '--max_steps', '2')) == 0
    assert nmd_main.main(nmd_args(data, tmp_path / 'b', *moving, '--max_steps', '7')) == 0
    state = {}
    for run in ('a', 'b'):
        r = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / run / 'NMD_x4_trial0')))
        state[run] = [r.get_tensor(k) for k in ('global_step', 'noise_sigma', 'alpha')]
    # 7 validations, window 3: the curriculum moved twice, also across the resume at step 2
    np.testing.assert_allclose(state['a'], [7, 0.1 * 0.8 ** 2, 0.7], rtol=1e-5)
    np.testing.assert_allclose(state['b'], state['a'], rtol=1e-6)
    # only the classifier is trained
    first = values(str(tmp_path / 'b' / 'NMD_x4_trial0' / 'model-2'), 'CLASSIFIER')
    last = values(tf.train.latest_checkpoint(str(tmp_path / 'b' / 'NMD_x4_trial0')), 'CLASSIFIER')
    assert set(changed(first, last)) == set(first)
    # export: CLASSIFIER weights only, a .meta with the InNOut collection
    out = str(tmp_path / 'Model' / 'NMD')
    assert nmd_main.main(nmd_args(data, tmp_path / 'a', '--export', out)) == 0
    names = [n for n, _ in tf.train.list_variables(out)]
    assert names and all(n.startswith('CLASSIFIER/') and 'Adam' not in n for n in names)
    with tf.Graph().as_default(), tf.Session() as sess:
        tf.train.import_meta_graph(out + '.meta').restore(sess, out)
        x, p = tf.get_collection('InNOut')
        prob = sess.run(p, {x: np.random.rand(2, PATCH, PATCH, 3)})
    assert prob.shape == (2, 1) and np.all((prob >= 0) & (prob <= 1))


def test_nmd_evaluation_counts(data, tmp_path, capsys):
    """Train_NMD/evaluate.py: with sigma 0 and alpha 1 the noisy and blurry patches are the clean
    ones, so each pair accuracy is exactly 50 % whatever the network says; otherwise in [0, 100]."""
    from Train_NMD import evaluate
    prefix = random_checkpoint(str(tmp_path / 'nmd'), nmd_train.shipping_graph, 'CLASSIFIER')
    same = evaluate.evaluate(prefix, data['nmd_val'], 0.0, 1.0, draws=2)
    assert same['patches'] == 4 and same['noise'] == same['blur'] == 50.0
    assert same['noisy'] == same['blurry'] == 100 - same['clean']
    evaluate.main(['--checkpoint', prefix, '--val_tfrecord_path', data['nmd_val'], '--sigma', '0.1', '--alpha', '0.5'])
    out = capsys.readouterr().out
    assert 'on 4 held-out patches: clean vs noisy (sigma 0.1)' in out and 'clean vs blurry (alpha 0.50)' in out


def test_nmd_rejects_a_natsr_record(data, tmp_path, capsys):
    assert nmd_main.main(nmd_args(data, tmp_path, '--tfrecord_path', data['sr'])) == 2
    assert 'generate_TrainNMD.py' in capsys.readouterr().err


# --- faults: the checkpoint index, damaged checkpoints, damaged TFRecords, a full disk; pruning

def frsr(data, ck, *extra):
    """main.py --model FRSR on the tiny data set, a checkpoint every step; the exit status."""
    return sr_main.main(sr_args(data, ck, '--model', 'FRSR', '--checkpoint_interval', '1', *extra))


@pytest.fixture(scope='module')
def three_steps(data, tmp_path_factory):
    """A trial trained 3 steps by main.py: model-1, model-2, model-3 and the index."""
    ck = tmp_path_factory.mktemp('three')
    assert frsr(data, ck, '--max_steps', '3') == 0
    return ck / 'FRSR_x4_trial0'


@pytest.fixture
def trial(three_steps, tmp_path):
    """A copy of the three-step trial in this test's --checkpoint_dir (tmp_path)."""
    import shutil
    return Path(shutil.copytree(three_steps, tmp_path / 'FRSR_x4_trial0'))


def contents(trial, step):
    return {f: open(f, 'rb').read() for f in glob.glob(str(trial / ('model-%d.*' % step)))}


def one_error_line(err):
    lines = [l for l in err.splitlines() if l.startswith('error:')]
    assert len(lines) == 1 and 'Traceback' not in err, err
    return lines[0]


def test_missing_or_garbled_index_resumes_from_the_newest_checkpoint(data, trial, tmp_path, capsys):
    before = {s: contents(trial, s) for s in (1, 2, 3)}
    os.remove(trial / 'checkpoint')
    assert frsr(data, tmp_path, '--max_steps', '4') == 0
    out, err = capsys.readouterr()
    assert 'checkpoint is missing' in err and 'resumed from %s' % (trial / 'model-3') in out
    assert {s: contents(trial, s) for s in (1, 2, 3)} == before        # nothing overwritten
    r = tf.train.load_checkpoint(str(trial / 'model-4'))
    assert r.get_tensor('global_step') == 4
    assert r.get_tensor('beta1_power') == pytest.approx(0.9 ** 5, rel=1e-5)   # 4 updates: no restart
    state = tf.train.get_checkpoint_state(str(trial))                    # rewritten, TensorFlow reads it
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ['model-%d' % s for s in (1, 2, 3, 4)]
    # an index written before the folder was moved (absolute paths): its checkpoint, found by name
    (trial / 'checkpoint').write_text('model_checkpoint_path: "/moved/away/model-3"\n')
    assert trials.checkpoint_candidates(str(trial)) == ([3, 2, 1], [])
    (trial / 'checkpoint').write_text('model_checkpoint_path: "model-4\n}{ garbage')
    steps, notes = trials.checkpoint_candidates(str(trial))
    assert steps == [4, 3, 2, 1] and len(notes) == 1 and 'checkpoint is garbled' in notes[0]
    (trial / 'checkpoint').write_bytes(b'\xff\xfe\x00model-3')                # not even text
    assert trials.checkpoint_candidates(str(trial))[0] == [4, 3, 2, 1]
    # an index whose checkpoints are all gone: no silent new start
    for s in (1, 2, 3, 4):
        trials.remove_checkpoint(str(trial), s)
    with pytest.raises(checkpoints.CheckpointError, match='names a checkpoint, but the folder holds none: .* new --trial'):
        trials.checkpoint_candidates(str(trial))


def read_whole(prefix):
    """Every tensor of the checkpoint `prefix` (a restore without a graph)."""
    r = tf.train.load_checkpoint(prefix)
    return [r.get_tensor(k) for k in r.get_variable_to_shape_map()]


def test_damaged_newest_checkpoint_gives_way_to_the_one_before(data, trial, tmp_path, capsys):
    data3 = glob.glob(str(trial / 'model-3.data-*'))[0]
    with open(data3, 'r+b') as f:
        f.truncate(os.path.getsize(data3) // 2)                          # a truncated copy
    assert frsr(data, tmp_path, '--max_steps', '4') == 0
    out, err = capsys.readouterr()
    assert 'model-3 is damaged (' in err and 'resumed from %s' % (trial / 'model-2') in out
    assert trials.checkpoint_damage(str(trial / 'model-3')) is None          # written again, whole
    assert tf.train.load_checkpoint(str(trial / 'model-4')).get_tensor('global_step') == 4
    # a flipped byte (TensorFlow's checksum), asked for with --step: one line naming it and --step
    data4 = glob.glob(str(trial / 'model-4.data-*'))[0]
    raw = bytearray(open(data4, 'rb').read())
    raw[len(raw) // 2] ^= 0xFF
    open(data4, 'wb').write(bytes(raw))
    with pytest.raises(checkpoints.CheckpointError) as e:
        trials.restore_checkpoint(str(trial), 4, read_whole)
    assert str(e.value).startswith('%s: damaged checkpoint (' % (trial / 'model-4'))
    assert str(e.value).endswith('resume from another --step (steps here: 1, 2, 3) or start afresh with a new --trial')
    # every checkpoint damaged: one line, start afresh with a new --trial
    for index in glob.glob(str(trial / 'model-*.index')):
        open(index, 'wb').write(b'not an sstable')
    with pytest.raises(checkpoints.CheckpointError, match='no intact checkpoint .*model-4.* new --trial'):
        trials.restore_checkpoint(str(trial), None, read_whole)


def damaged_copy(source, path, record):
    """A copy of the TFRecord `source` (and its sidecar) with one byte of `record` flipped."""
    raw = bytearray(open(source, 'rb').read())
    size = len(raw) // json.load(open(source + '.json'))['count']      # the records are all this long
    raw[record * size + size // 2] ^= 0xFF
    open(path, 'wb').write(bytes(raw))
    open(path + '.json', 'w').write(open(source + '.json').read())
    return path


def test_damaged_tfrecord_saves_the_last_completed_step(tmp_path, capsys, monkeypatch):
    from generate_Dataset import records
    good = make_tfrecord(str(tmp_path / 'good.tfrecord'), 'NatSR', 16, PATCH)
    bad = damaged_copy(good, str(tmp_path / 'bad.tfrecord'), 12)
    # read in file order (no shuffle buffer to fill first), so that the damage shows mid-run
    original = records.dataset
    monkeypatch.setattr(records, 'dataset', lambda *a, **k: original(*a, **dict(k, shuffle_buffer=0)))
    args = lambda record, ck: ['--model', 'FRSR', '--tfrecord_path', record, '--batch_size', '2',
                               '--checkpoint_dir', str(ck), '--max_steps', '100', '--checkpoint_interval', '1000']
    assert sr_main.main(args(bad, tmp_path / 'ck')) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith('error: %s: damaged TFRecord (corrupted record at ' % bad)
    step = int(line.split('the checkpoint of step ')[1].split()[0])
    trial = tmp_path / 'ck' / 'FRSR_x4_trial0'
    assert 1 <= step <= 6 and tf.train.latest_checkpoint(str(trial)).endswith('model-%d' % step)
    assert tf.train.load_checkpoint(str(trial / ('model-%d' % step))).get_tensor('global_step') == step
    # damage in the first batch: nothing to save; the NMD's validation TFRecord: named before training
    monkeypatch.undo()
    first = damaged_copy(good, str(tmp_path / 'first.tfrecord'), 0)
    assert sr_main.main(args(first, tmp_path / 'ck0')) == 2
    assert 'at step 1; nothing was trained yet' in one_error_line(capsys.readouterr().err)
    assert os.listdir(tmp_path / 'ck0' / 'FRSR_x4_trial0') == []       # no checkpoint, no events file
    nmd_val = damaged_copy(make_tfrecord(str(tmp_path / 'val.tfrecord'), 'NMD', 4, PATCH),
                           str(tmp_path / 'val_bad.tfrecord'), 1)
    nmd = make_tfrecord(str(tmp_path / 'nmd.tfrecord'), 'NMD', 8, PATCH)
    assert nmd_main.main(nmd_args({'nmd': nmd, 'nmd_val': nmd_val}, tmp_path / 'ck', '--max_steps', '1')) == 2
    assert ('%s: damaged TFRecord (corrupted record at' % nmd_val) in one_error_line(capsys.readouterr().err)


def test_a_run_that_trains_nothing_leaves_no_events_file(trial, tmp_path, data, capsys):
    """The three-step trial resumed with --max_steps 3: nothing to train, nothing written."""
    before = sorted(os.listdir(trial))
    assert frsr(data, tmp_path, '--max_steps', '3') == 0
    assert sorted(os.listdir(trial)) == before
    assert frsr(data, tmp_path, '--max_steps', '4') == 0                  # one step: its events file
    assert len([f for f in os.listdir(trial) if f.startswith('events.')]) == 1 + len(
        [f for f in before if f.startswith('events.')])


TRUNCATED_CHECK = """
import atexit, runpy, sys
atexit.register(lambda: print('tensorflow imported' if 'tensorflow' in sys.modules else 'no tensorflow'))
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


@pytest.mark.parametrize('script, flag', [('main.py', '--tfrecord_path'), ('Train_NMD/main.py', '--val_tfrecord_path')])
def test_truncated_tfrecord_is_one_line_before_tensorflow_starts(tmp_path, script, flag):
    import subprocess
    import sys
    from conftest import ROOT
    good = make_tfrecord(str(tmp_path / 'good.tfrecord'), 'NMD', 4, PATCH)
    bad = str(tmp_path / 'cut.tfrecord')
    raw = open(good, 'rb').read()
    open(bad, 'wb').write(raw[:len(raw) - 100])
    open(bad + '.json', 'w').write(open(good + '.json').read())
    given = {'--tfrecord_path': good, '--val_tfrecord_path': good, flag: bad}
    res = subprocess.run([sys.executable, '-c', TRUNCATED_CHECK, os.path.join(ROOT, script)]
                         + [a for kv in given.items() for a in kv] + ['--checkpoint_dir', str(tmp_path / 'ck')],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and res.stdout.strip() == 'no tensorflow', (res.stdout, res.stderr)
    size = len(raw) // 4
    assert res.stderr == ("error: %s: damaged TFRecord: %d bytes, its sidecar's 4 records of %d bytes make %d "
                          "(truncated); regenerate it\n" % (bad, len(raw) - 100, size, len(raw)))
    assert not os.path.exists(tmp_path / 'ck')


def test_full_disk_leaves_the_last_checkpoint_as_it_was(data, trial, tmp_path, capsys, monkeypatch):
    """A full --checkpoint_dir, simulated: the save of step 4 writes part of its data file (TF's
    .tempstate name) and fails as TensorFlow does (ResourceExhaustedError, ENOSPC); then the
    index write fails. One line each; no file of step 4 is left; the index still names step 3."""
    save = tf.train.Saver.save
    checkpoint_files = lambda: sorted(f for f in os.listdir(trial) if not f.startswith('events.'))
    files = checkpoint_files()

    def full_disk(self, sess, prefix, global_step=None, **kw):
        if global_step != 4:
            return save(self, sess, prefix, global_step=global_step, **kw)
        part = '%s-4.data-00000-of-00001.tempstate8417' % prefix
        open(part, 'wb').write(b'\0' * 4096)
        raise tf.errors.ResourceExhaustedError(None, None, 'Graph execution error:\n\n%s; %s\n\t [[{{node save/SaveV2}}]]'
                                               % (part, os.strerror(errno.ENOSPC)))

    monkeypatch.setattr(tf.train.Saver, 'save', full_disk)
    assert frsr(data, tmp_path, '--max_steps', '5') == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == ('error: %s: cannot write the checkpoint of step 4 (No space left on device): nothing of it '
                    'is left, the last checkpoint, step 3, is as it was' % trial)
    assert checkpoint_files() == files
    assert tf.train.latest_checkpoint(str(trial)).endswith('model-3')
    assert trials.checkpoint_damage(str(trial / 'model-3')) is None
    # the checkpoint files fit, the index does not
    monkeypatch.undo()
    replace = os.replace

    def no_room_for_the_index(src, dst):
        if os.path.basename(dst) == 'checkpoint':
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dst)
        return replace(src, dst)

    monkeypatch.setattr(os, 'replace', no_room_for_the_index)
    assert frsr(data, tmp_path, '--max_steps', '5') == 2
    assert 'cannot write the checkpoint of step 4 (No space left on device)' in one_error_line(capsys.readouterr().err)
    assert checkpoint_files() == files
    assert tf.train.latest_checkpoint(str(trial)).endswith('model-3')


def test_pruning_keeps_the_newest_and_the_exported_checkpoints(data, trial, tmp_path):
    assert frsr(data, tmp_path, '--export', str(tmp_path / 'Model' / 'FRSR')) == 0     # exports model-3
    assert json.load(open(trial / 'exported.json')) == {'model-3': [str(tmp_path / 'Model' / 'FRSR')]}
    assert frsr(data, tmp_path, '--max_steps', '6', '--keep_checkpoints', '2') == 0
    assert trials.checkpoint_steps(str(trial)) == [3, 5, 6]         # model-1, model-2 of the earlier run too
    state = tf.train.get_checkpoint_state(str(trial))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ['model-3', 'model-5', 'model-6']


def test_kept_steps(tmp_path):
    """Which checkpoints survive the save of step 9: the newest K counting step 9, the exported
    ones, and those after it (left to be overwritten by a run resumed with an older --step)."""
    for s in (1, 2, 4, 6, 8, 12):
        (tmp_path / ('model-%d.index' % s)).write_bytes(b'')
    (tmp_path / 'model-10.data-00000-of-00001').write_bytes(b'')          # no .index: no checkpoint
    assert trials.kept_steps(str(tmp_path), 9, 3) == [6, 8, 9]
    assert trials.kept_steps(str(tmp_path), 9, 1) == [9]
    assert trials.kept_steps(str(tmp_path), 9, 0) == [1, 2, 4, 6, 8, 9]
    (tmp_path / 'exported.json').write_text(json.dumps({'model-2': ['Model/FRSR'], 'model-12': ['x']}))
    assert trials.kept_steps(str(tmp_path), 9, 3) == [2, 6, 8, 9]
    (tmp_path / 'exported.json').write_text('{"model-2": ')
    with pytest.raises(checkpoints.CheckpointError, match='exported.json: not a record of exported checkpoints'):
        trials.kept_steps(str(tmp_path), 9, 3)


def test_sigterm_saves_the_last_completed_step_and_exits_143(data, tmp_path):
    """A SIGTERM (as `kill` or a job scheduler sends it) after step 2, in a process of its own: the test
    process's signal state (an xdist worker that ran other tests) must not decide the outcome."""
    import signal
    import subprocess
    import sys
    from conftest import ROOT
    argv = sr_args(data, tmp_path, '--model', 'FRSR', '--max_steps', '5')
    child = (
        'import os, signal, sys\n'
        'sys.path.insert(0, %r)\n'
        'from natsr.process import tflog; tflog.init()\n'
        'import main\n'
        'from natsr.training import loop\n'
        'class Bar(loop.tqdm):\n'
        '    def update(self, n=1):\n'
        '        super().update(n)\n'
        '        if self.n == 2:\n'
        '            os.kill(os.getpid(), signal.SIGTERM)\n'
        'loop.tqdm = Bar\n'
        'sys.exit(main.main(%r))\n' % (ROOT, argv))
    run = subprocess.run([sys.executable, '-c', child], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 128 + signal.SIGTERM, run.stderr[-2000:]
    trial = tmp_path / 'FRSR_x4_trial0'
    assert 'interrupted at step 2: the checkpoint of step 2 is in %s' % trial in run.stderr.splitlines()
    assert trials.checkpoint_steps(str(trial)) == [2]
    assert tf.train.load_checkpoint(tf.train.latest_checkpoint(str(trial))).get_tensor('global_step') == 2
