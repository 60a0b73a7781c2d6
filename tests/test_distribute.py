"""tf.distribute training (distribute.py): one step under MirroredStrategy with 2 replicas equals
one single-device step on the same global batch (FRSR and NatSR); checkpoints move between
distributed and single-device training and test.py; two MultiWorkerMirroredStrategy workers on
localhost train in lock-step.

No GPU needed: the CPU is split into 2 logical devices. That must happen before TensorFlow starts
its devices, so every case runs in a fresh subprocess (this file, run as a script, is the worker).
"""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PATCH, BATCH, SCALE = 16, 4, 4
TIMEOUT = 420  # seconds per subprocess; the machine may be shared with a training run


def python(*args, env=None, timeout=TIMEOUT, cwd=ROOT):
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', **(env or {}))
    res = subprocess.run([sys.executable] + [str(a) for a in args], cwd=cwd, env=full_env,
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res


# ---------------------------------------------------------------- the worker (a subprocess)

def _snapshot(sess, variables, strategy=None):
    """{checkpoint name: value} of `variables` (one session call); under a strategy, also
    checks that every replica's copy holds the same value."""
    fetch = {v.op.name: v.read_value() if strategy is None else list(strategy.experimental_local_results(v))
             for v in variables}
    out = {}
    for name, value in sess.run(fetch).items():
        if strategy is not None:
            for copy in value[1:]:
                np.testing.assert_array_equal(copy, value[0], err_msg=name)
            value = value[0]
        out[name] = value
    return out


def _converge_spectral_norms(sess, tf):
    """Set every spectral-norm `u` to its kernel's top right singular vector, so that one power
    iteration more or less (the calls of DIS in one step read `u` in no fixed order) changes
    it only slightly."""
    us = [v for v in tf.global_variables() if v.op.name.endswith('/u')]
    kernels = sess.run([tf.global_variables(u.op.name[:-1] + 'kernel')[0] for u in us])
    for u, kernel in zip(us, kernels):
        w = kernel.reshape(-1, kernel.shape[-1]).astype(np.float64)
        top = np.linalg.eigh(w.T @ w)[1][:, -1]
        u.load(top[None].astype(np.float32), sess)


def worker_compare(model, out_dir):
    """One iteration of `model` on one device, then under MirroredStrategy on 2 logical CPUs,
    from the same initial variables and on the same global batch; saves both results."""
    from natsr.training import distribute
    devices = distribute.logical_cpus(2)
    import tensorflow.compat.v1 as tf
    import config
    from natsr.training import loop
    import train
    args = loop.config_parser(config, '').parse_args(
        ['--model', model, '--batch_size', str(BATCH), '--patch_size', str(PATCH), '--scale', str(SCALE)])
    # a bright first half and a dark second half: the two replicas' shares differ (at this
    # initialisation the DIS logits are near 0, so the RaGAN batch means are checked apart,
    # on a toy critic: test_ragan_means_over_the_global_batch_under_mirrored)
    rng = np.random.RandomState(0)
    level = np.where(np.arange(BATCH) < BATCH // 2, 0.8, 0.1).astype(np.float32)[:, None, None, None]
    hr = np.clip(level + 0.2 * rng.rand(BATCH, PATCH, PATCH, 3), 0, 1).astype(np.float32)
    lr = hr[:, ::SCALE, ::SCALE]
    init = os.path.join(out_dir, 'init')
    results = {}
    for name in ('single', 'mirrored'):
        t0 = time.time()
        with tf.Graph().as_default():
            tf.set_random_seed(1)
            cluster = distribute.Cluster() if name == 'single' else distribute.mirrored(devices)
            with cluster.scope():
                ds = tf.data.Dataset.from_tensors((lr, hr)).repeat()
                lr_t, hr_t, data_init = cluster.batches(ds)
                trainer = train.stage(args).build(lr_t, hr_t, cluster.strategy)
                saver = tf.train.Saver()
            t1 = time.time()
            with cluster.session() as sess:
                sess.run([tf.global_variables_initializer(), data_init])
                if name == 'single':
                    _converge_spectral_norms(sess, tf)
                    saver.save(sess, init, write_meta_graph=False, write_state=False)
                else:
                    saver.restore(sess, init)
                before = _snapshot(sess, tf.global_variables(), cluster.strategy)
                losses = sess.run(trainer.fetches)
                losses.pop('train')
                after = _snapshot(sess, tf.global_variables(), cluster.strategy)
        print('%s %s: graph %.1f s, session %.1f s' % (model, name, t1 - t0, time.time() - t1))
        results[name] = (before, after, losses)
    np.savez(os.path.join(out_dir, 'results.npz'),
             **{'%s|%s|%s' % (name, when, k): v for name, r in results.items()
                for when, d in zip(('before', 'after', 'loss'), r) for k, v in d.items()})


def worker_ragan(out_dir):
    """The RaGAN losses of train.py on a toy critic `d * x` and generator `g * x`: one SGD
    D step then one G step, on one device and under MirroredStrategy (2 logical CPUs), on a
    batch whose halves (one per replica) have very different means."""
    from natsr.training import distribute
    devices = distribute.logical_cpus(2)
    import tensorflow.compat.v1 as tf
    import train
    x_real = np.array([[3.0], [2.5], [-1.0], [-2.0]], np.float32)
    x_fake = np.array([[0.5], [1.5], [-3.0], [0.2]], np.float32)
    got = {}
    for name in ('single', 'mirrored'):
        with tf.Graph().as_default():
            cluster = distribute.Cluster() if name == 'single' else distribute.mirrored(devices)
            with cluster.scope():
                xr, xf, data_init = cluster.batches(tf.data.Dataset.from_tensors((x_real, x_fake)).repeat())
                d = tf.get_variable('d', initializer=1.5)
                g = tf.get_variable('g', initializer=0.7)

                def step(xr, xf):
                    share = distribute.replica_share
                    loss_d, _ = train.ragan_losses(d * xr, d * tf.stop_gradient(g * xf))
                    d_train = tf.train.GradientDescentOptimizer(0.5).minimize(share(loss_d), var_list=[d])
                    with tf.control_dependencies([d_train]):
                        _, loss_g = train.ragan_losses(d * xr, d * (g * xf))
                    g_train = tf.train.GradientDescentOptimizer(0.5).minimize(share(loss_g), var_list=[g])
                    return {'train': g_train, 'loss_d': loss_d, 'loss_g': loss_g}
                out = (step(xr, xf) if cluster.strategy is None else
                       distribute.merge(cluster.strategy, cluster.strategy.run(step, (xr, xf))))
            with cluster.session() as sess:
                sess.run([tf.global_variables_initializer(), data_init])
                res = sess.run(out)
                res.update(sess.run({'d': d.read_value(), 'g': g.read_value()}))
        got.update({'%s|%s' % (name, k): v for k, v in res.items() if k != 'train'})
    np.savez(os.path.join(out_dir, 'ragan.npz'), **got)


# ---------------------------------------------------------------- helpers of the tests

def load_results(out_dir):
    got = {}
    with np.load(os.path.join(out_dir, 'results.npz')) as z:
        for key in z.files:
            name, when, var = key.split('|')
            got.setdefault(name, {}).setdefault(when, {})[var] = z[key]
    return got['single'], got['mirrored']


SLOTS = ('/Adam', '/Adam_1', '/Adam_D', '/Adam_D_1')


def assert_same_update(out_dir, moved_scopes, lr=2e-4):
    """The mirrored step made the single-device update: the same names (no replica suffixes),
    the same losses, Adam's moments (the gradient and its square: a sum over the replicas
    instead of a mean would show here), weight updates and spectral-norm estimates."""
    single, mirrored = load_results(out_dir)
    assert sorted(single['after']) == sorted(mirrored['after'])
    assert not any('replica' in k for k in mirrored['after'])
    for k in single['before']:
        np.testing.assert_array_equal(single['before'][k], mirrored['before'][k], err_msg=k)
    for k in single['after']:
        if k.startswith(moved_scopes) and not k.endswith('/u'):
            assert not np.array_equal(single['after'][k], single['before'][k]), k
    assert single['after']['global_step'] == 1 and mirrored['after']['global_step'] == 1   # once
    for k, want in single['loss'].items():
        assert mirrored['loss'][k] == pytest.approx(want, rel=1e-5, abs=1e-7), k
    after, got = single['after'], mirrored['after']
    # Adam's moments: to 1e-4 of the largest of their kind in the network
    for slot in SLOTS:
        for net in moved_scopes:
            names = [k for k in after if k.startswith(net) and k.endswith(slot)]
            top = max(float(np.abs(after[k]).max()) for k in names) if names else 0
            for k in names:
                np.testing.assert_allclose(got[k], after[k], rtol=1e-3, atol=1e-4 * top, err_msg=k)
    for k, want in after.items():
        if k.endswith(SLOTS):
            continue
        if k.endswith('/u'):   # unit vectors; the power iteration's own spread (see the worker)
            np.testing.assert_allclose(got[k], want, atol=1e-3, err_msg=k)
            continue
        slot = [after[k + s] for s in ('/Adam', '/Adam_D') if k + s in after]
        if not slot:           # counters, the frozen NMD, what the step does not train
            np.testing.assert_allclose(got[k], want, rtol=1e-6, err_msg=k)
            continue
        # the first Adam step moves a weight by about lr * sign(gradient): compared where the
        # gradient stands well above float noise (|g| >= 1e-6, 100 x Adam's epsilon); e.g. the
        # last bias of DIS, on which the RaGAN losses do not depend, gets rounding noise only
        clear = np.abs(slot[0]) >= 0.1 * 1e-6
        np.testing.assert_allclose(got[k][clear], want[clear], rtol=0, atol=1e-3 * lr, err_msg=k)
    return single, mirrored


# ---------------------------------------------------------------- tests

@pytest.mark.slow
def test_frsr_step_mirrored_equals_single_device(tmp_path):
    t = time.time()
    python(__file__, 'compare', 'FRSR', tmp_path)
    single, _ = assert_same_update(str(tmp_path), ('GEN/',))
    assert not any(k.startswith('DIS/') for k in single['after'])
    print('FRSR comparison: %.0f s' % (time.time() - t))


@pytest.mark.slow
def test_ragan_means_over_the_global_batch_under_mirrored(tmp_path):
    """Each replica sees half the batch, but the RaGAN losses and their gradients use the means
    of the whole batch: the same losses and the same D and G updates as on one device."""
    python(__file__, 'ragan', tmp_path)
    with np.load(str(tmp_path / 'ragan.npz')) as z:
        got = dict(z)
    for k in ('loss_d', 'loss_g', 'd', 'g'):
        assert got['mirrored|' + k] == pytest.approx(got['single|' + k], rel=1e-6), k
    assert got['single|d'] != pytest.approx(1.5) and got['single|g'] != pytest.approx(0.7)   # both moved


@pytest.mark.slow
def test_natsr_iteration_mirrored_equals_single_device(tmp_path):
    python(__file__, 'compare', 'NatSR', tmp_path)
    single, mirrored = assert_same_update(str(tmp_path), ('GEN/', 'DIS/'))
    for k in single['after']:
        if k.startswith('CLASSIFIER/'):
            np.testing.assert_array_equal(mirrored['after'][k], single['before'][k])   # NMD frozen
    assert set(single['loss']) == {'l1', 'nat', 'g_gan', 'd'}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    from conftest import make_tfrecord
    d = tmp_path_factory.mktemp('data')
    return make_tfrecord(str(d / 'sr.tfrecord'), 'NatSR', 2 * BATCH, PATCH)   # batches differ


def main_args(data, ckpt, *extra):
    return ['main.py', '--model', 'FRSR', '--tfrecord_path', data, '--patch_size', PATCH, '--batch_size', BATCH,
            '--checkpoint_dir', ckpt, '--summary_interval', 1, '--checkpoint_interval', 100] + list(extra)


def step_of(prefix):
    import tensorflow.compat.v1 as tf
    return int(tf.train.load_checkpoint(prefix).get_tensor('global_step'))


@pytest.mark.slow
def test_checkpoints_move_between_single_device_mirrored_and_test_py(data, tmp_path):
    import tensorflow.compat.v1 as tf
    ck = tmp_path / 'ck'
    trial = ck / 'FRSR_x4_trial0'
    python(*main_args(data, ck, '--max_steps', 1))                                            # one device
    res = python(*main_args(data, ck, '--max_steps', 3, '--strategy', 'mirrored', '--cpu_replicas', 2))
    assert 'resumed from' in res.stdout and 'MirroredStrategy over 2 logical CPU devices' in res.stdout
    mirrored = tf.train.latest_checkpoint(str(trial))
    assert mirrored.endswith('model-3') and step_of(mirrored) == 3
    names = [n for n, _ in tf.train.list_variables(mirrored)]
    assert 'GEN/conv1/conv2d/kernel' in names and not any('replica' in n for n in names)
    assert any(f.startswith('events.out.tfevents') for f in os.listdir(trial))
    # test.py reads the distributed checkpoint (a training folder holding a `checkpoint` file)
    # and its output is that of the checkpoint's GEN
    import utils
    lr_dir, out_dir = tmp_path / 'lr', tmp_path / 'out'
    lr_dir.mkdir()
    lr = (np.random.RandomState(0).rand(12, 12, 3) * 255).astype(np.uint8)
    utils.save_image(str(lr_dir / 'a.png'), lr)
    res = python('test.py', '--datapath', lr_dir, '--modelpath', trial, '--model', 'FRSR',
                 '--savepath', out_dir, '--save', 1, '--ref', 0)
    assert 'model-3' in res.stdout
    got = utils.read_image(str(out_dir / 'FRSR' / 'a.png')).astype(np.float32)
    want = np.clip(gen_output(mirrored, lr[None].astype(np.float32) / 255.0)[0], 0, 1) * 255
    assert np.abs(got - want).max() <= 1.0
    res = python(*main_args(data, ck, '--max_steps', 4))                                      # back on one device
    assert 'resumed from %s' % mirrored in res.stdout
    assert step_of(tf.train.latest_checkpoint(str(trial))) == 4


def gen_output(prefix, lr):
    """FRACTAL x4 of checkpoint `prefix` on `lr`, in this process (one device)."""
    import tensorflow.compat.v1 as tf
    from model import FRACTAL
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, None, None, 3])
        y = FRACTAL(x, SCALE).output
        with tf.Session() as sess:
            tf.train.Saver(tf.global_variables('GEN/')).restore(sess, prefix)
            return sess.run(y, {x: lr})


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(('localhost', 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run_workers(tmp_path, argv, n=2):
    """`n` workers of `python main.py argv --strategy multiworker` on localhost ports (TF_CONFIG),
    killed (SIGKILL: a worker blocked in a collective ignores SIGTERM) after TIMEOUT seconds.
    Returns their logs; fails unless all of them exit with status 0."""
    hosts = ['localhost:%d' % p for p in free_ports(n)]
    procs = []
    try:
        for i in range(n):
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', TF_CONFIG=json.dumps(
                {'cluster': {'worker': hosts}, 'task': {'type': 'worker', 'index': i}}))
            log = open(tmp_path / ('worker%d.log' % i), 'w+')
            procs.append((subprocess.Popen([sys.executable] + [str(a) for a in argv] + ['--strategy', 'multiworker'],
                                           cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        deadline = time.time() + TIMEOUT
        for p, _ in procs:
            p.wait(timeout=max(1, deadline - time.time()))
    finally:
        for p, log in procs:
            if p.poll() is None:       # only the workers this test started
                p.kill()
                p.wait()
            log.close()
    logs = [(tmp_path / ('worker%d.log' % i)).read_text() for i in range(n)]
    assert [p.returncode for p, _ in procs] == [0] * n, '\n----\n'.join(l[-4000:] for l in logs)
    assert 'worker 0 of %d workers (chief), %d replicas in all' % (n, n) in logs[0]
    assert 'worker 1 of %d workers, %d replicas in all' % (n, n) in logs[1]
    return logs


@pytest.mark.slow
def test_multiworker_two_local_workers_match_single_device(data, tmp_path):
    """Two workers resume a single-device checkpoint, train 2 steps in lock-step and the chief
    saves; the same 2 steps on one device give the same weights."""
    import shutil
    import tensorflow.compat.v1 as tf
    ck, ck_single = tmp_path / 'ck', tmp_path / 'ck_single'
    python(*main_args(data, ck, '--max_steps', 1))
    shutil.copytree(ck, ck_single)
    logs = run_workers(tmp_path, main_args(data, ck, '--max_steps', 3))
    assert all('resumed from' in l for l in logs)
    # the chief alone wrote checkpoints (and summaries) in the trial folder
    trial = ck / 'FRSR_x4_trial0'
    last = tf.train.latest_checkpoint(str(trial))
    assert last.endswith('model-3') and step_of(last) == 3
    assert sorted(f for f in os.listdir(trial) if f.endswith('.index')) == ['model-1.index', 'model-3.index']
    # the same two steps on one device (the same global batches: each worker kept its share)
    python(*main_args(data, ck_single, '--max_steps', 3))
    single = tf.train.load_checkpoint(str(ck_single / 'FRSR_x4_trial0' / 'model-3'))
    multi = tf.train.load_checkpoint(last)
    names = sorted(single.get_variable_to_shape_map())
    assert names == sorted(multi.get_variable_to_shape_map())
    # The all-reduce sums the gradient in another order than one device does, and Adam divides each
    # gradient by its own running RMS: a weight whose two gradients nearly cancel can move by a
    # different fraction of the learning rate (a dead unit's gradient is rounding noise, and its first
    # Adam step is a full step of either sign). So the weights are compared in units of the learning
    # rate: on average within 0.5 % of one step, and fewer than 1 % of them more than 5 % apart
    # (measured: 0.015 % of one step on average, 0.015 % of the weights beyond 5 %; other batches
    # would move most weights by a different O(1) fraction of a step).
    import config
    start = tf.train.load_checkpoint(str(ck_single / 'FRSR_x4_trial0' / 'model-1'))
    diffs = np.concatenate([(multi.get_tensor(k) - single.get_tensor(k)).ravel() / config.LEARNING_RATE
                            for k in names if k.startswith('GEN/') and '/Adam' not in k])
    moved = np.concatenate([(single.get_tensor(k) - start.get_tensor(k)).ravel() / config.LEARNING_RATE
                            for k in names if k.startswith('GEN/') and '/Adam' not in k])
    assert np.median(np.abs(moved)) > 0.5                               # the steps did move the weights
    assert np.abs(diffs).mean() < 0.005 and np.mean(np.abs(diffs) > 0.05) < 0.01, (np.abs(diffs).mean(),
                                                                           np.mean(np.abs(diffs) > 0.05))


@pytest.mark.slow
def test_multiworker_natsr_iteration(data, tmp_path):
    """NatSR (D step, G step, RaGAN means and summaries across workers) on two workers: both
    finish, the chief's checkpoint holds the trained GEN and DIS and the NMD as it was."""
    import tensorflow.compat.v1 as tf
    from conftest import random_checkpoint
    from model import FRACTAL, NMD
    frsr = random_checkpoint(str(tmp_path / 'FRSR'), lambda x: FRACTAL(x, SCALE), 'GEN')
    nmd = random_checkpoint(str(tmp_path / 'NMD'), NMD, 'CLASSIFIER')
    argv = main_args(data, tmp_path / 'ck', '--max_steps', 1, '--frsr_checkpoint', frsr, '--nmd_checkpoint', nmd)
    argv[argv.index('FRSR')] = 'NatSR'
    run_workers(tmp_path, argv)
    last = tf.train.latest_checkpoint(str(tmp_path / 'ck' / 'NatSR_x4_trial0'))
    assert last.endswith('model-1') and step_of(last) == 1
    trained, start, nmd_start = (tf.train.load_checkpoint(p) for p in (last, frsr, nmd))
    k = 'GEN/conv1/conv2d/kernel'
    assert not np.array_equal(trained.get_tensor(k), start.get_tensor(k))
    assert 'DIS/conv1_1/kernel/Adam_D' in trained.get_variable_to_shape_map()
    for k in nmd_start.get_variable_to_shape_map():
        np.testing.assert_array_equal(trained.get_tensor(k), nmd_start.get_tensor(k))


@pytest.mark.parametrize('extra, message', [
    (['--cpu_replicas', '2'], 'need --strategy mirrored'),
    (['--strategy', 'mirrored', '--num_gpus', '99'], '99 GPUs asked'),
    (['--strategy', 'mirrored', '--num_gpus', '1', '--cpu_replicas', '2'], 'exclude each other'),
    (['--strategy', 'multiworker'], 'needs TF_CONFIG'),
])
def test_bad_strategy_flags(data, tmp_path, capsys, monkeypatch, extra, message):
    import main as sr_main
    monkeypatch.delenv('TF_CONFIG', raising=False)
    assert sr_main.main([str(a) for a in main_args(data, tmp_path, '--max_steps', 1, *extra)][1:]) == 2
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err


def test_batch_must_split_evenly(data, tmp_path):
    res = subprocess.run([sys.executable] + [str(a) for a in main_args(
        data, tmp_path, '--max_steps', 1, '--strategy', 'mirrored', '--cpu_replicas', 3)],
        cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'), capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 2 and '--batch_size 4 does not split evenly over 3 replicas' in res.stderr
    assert 'Traceback' not in res.stderr


if __name__ == '__main__':      # the subprocess of a test
    sys.path.insert(0, ROOT)
    os.chdir(ROOT)
    from natsr.process import tflog
    tflog.graph_mode()          # as the trainers run (main.py calls tflog.init)
    if sys.argv[1] == 'compare':
        worker_compare(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == 'ragan':
        worker_ragan(sys.argv[2])
    else:
        raise SystemExit('unknown command %r' % sys.argv[1:])
