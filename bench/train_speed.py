"""Seconds per training iteration of the three stages (NMD, FRSR, NatSR) with the TensorFlow
trainers' own graphs (the stages of train.py and Train_NMD/train.py), on a fixed in-memory batch, so
that reading data does not count. Median of --iters timed iterations after one warm-up.

    python bench/train_speed.py                                  # paper and small shapes, all stages
    python bench/train_speed.py --shapes small --stages FRSR --iters 5
    python bench/train_speed.py --tfrecord train_SR_X2_p96.tfrecord --batch 16 --stages FRSR,NatSR

Shapes: `paper` = batch 32 of 48x48 LR / 192x192 HR patches (NMD: 32 HR patches of 192);
`small` = batch 4 of 24x24 LR / 96x96 HR (NMD: 4 patches of 96). x4, random weights.

Input-bound check (--tfrecord): the same iteration also reads its batches from the TFRecord through
the trainers' own pipeline (records.dataset and a one-shot iterator, as main.py and
Train_NMD/main.py build it), timed interleaved with the fixed batch (tf.data, fixed, tf.data, ...)
so that both see the same machine load; then the pipeline alone (batches per second, nothing
training). The patch shape and scale come from the TFRecord's sidecar; its kind sets the stages
(NatSR: FRSR, NatSR; NMD: NMD). A trainer is input-bound when the tf.data iteration is slower than
the fixed one, or the pipeline alone delivers fewer batches per second than the trainer consumes.
"""
import argparse
import os
import sys
import time

if __package__ in (None, ''):  # run as a script: the project root first on sys.path (docs/layout.md)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np

from natsr.process import tflog

SHAPES = {'paper': (32, 192), 'small': (4, 96)}   # (batch, HR patch side)
SCALE = 4


def stage_graph(stage, batch, patch, precision, scale=SCALE, tfrecord=None):
    """(session config, fetches, batch tensors) of one training iteration of `stage`, on constant
    random patches, or with `tfrecord` on its batches through records.dataset."""
    import tensorflow.compat.v1 as tf
    import config
    from natsr import device
    from natsr.training import loop
    import train
    from generate_Dataset import records
    from Train_NMD import config as nmd_config
    from Train_NMD import train as nmd_train
    if tfrecord:
        ds, _ = records.dataset(tfrecord, batch, seed=0)
        image, hr = tf.data.make_one_shot_iterator(ds).get_next()
    else:
        rng = np.random.RandomState(0)
        side = patch if stage == 'NMD' else patch // scale
        hr = tf.constant(rng.rand(batch, patch, patch, 3).astype(np.float32))
        image = tf.constant(rng.rand(batch, side, side, 3).astype(np.float32))
    if stage == 'NMD':
        args = loop.config_parser(nmd_config, '').parse_args(['--batch_size', str(batch), '--scale', str(scale)])
        trainer = nmd_train.NMDStage(args).build(image, hr)
    else:
        args = loop.config_parser(config, '').parse_args(['--model', stage, '--batch_size', str(batch),
                                                          '--scale', str(scale)])
        trainer = train.stage(args).build(image, hr)
    return device.session_config(precision), trainer.fetches, (image, hr)


class Stage(object):
    """One stage's training iteration in its own graph and session, initialised and warmed up."""

    def __init__(self, stage, batch, patch, precision, scale=SCALE, tfrecord=None):
        import tensorflow.compat.v1 as tf
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.set_random_seed(0)
            cfg, self.fetches, self.batch = stage_graph(stage, batch, patch, precision, scale, tfrecord)
            self.sess = tf.Session(config=cfg)
            self.sess.run(tf.global_variables_initializer())
        self.sess.run(self.fetches)                      # warm-up: graph optimisation, allocations, buffers

    def step(self):
        t = time.perf_counter()
        self.sess.run(self.fetches)
        return time.perf_counter() - t

    def batches_per_second(self, n):
        """The input pipeline alone: `n` batches read in a row (the prefetch buffer drains at once)."""
        t = time.perf_counter()
        for _ in range(n):
            self.sess.run(self.batch)
        return n / (time.perf_counter() - t)

    def close(self):
        self.sess.close()


def time_stage(stage, batch, patch, iters, precision):
    """Median seconds of an iteration of `stage` on a fixed batch."""
    s = Stage(stage, batch, patch, precision)
    try:
        return float(np.median([s.step() for _ in range(iters)]))
    finally:
        s.close()


def input_bound(stage, batch, tfrecord, iters, precision, reads=20):
    """{fixed_s, tfdata_s, ratio, pipeline_batches_s, consumed_batches_s}: `stage`'s iteration on a
    fixed batch and through the pipeline of `tfrecord`, interleaved; then the pipeline alone."""
    from generate_Dataset import records
    meta = records.load_sidecar(tfrecord)
    patch, scale = meta['label_shape'][0], meta['scale']
    real = Stage(stage, batch, patch, precision, scale, tfrecord)
    fixed = Stage(stage, batch, patch, precision, scale)
    try:
        times = [(real.step(), fixed.step()) for _ in range(iters)]
        pipeline = real.batches_per_second(reads)
    finally:
        real.close()
        fixed.close()
    tfdata_s, fixed_s = (float(np.median([t[i] for t in times])) for i in (0, 1))
    return {'stage': stage, 'batch': batch, 'patch': patch, 'scale': scale, 'fixed_s': fixed_s,
            'tfdata_s': tfdata_s, 'ratio': tfdata_s / fixed_s, 'pipeline_batches_s': pipeline,
            'consumed_batches_s': 1.0 / fixed_s}


def stages_of(tfrecord, wanted):
    """The stages of `wanted` that a TFRecord of its kind trains; SystemExit (one line) otherwise."""
    from generate_Dataset import records
    try:
        kind = records.load_sidecar(tfrecord)['kind']
    except (OSError, ValueError) as e:
        raise SystemExit('error: %s' % e)
    fits = {'NatSR': ('FRSR', 'NatSR'), 'NMD': ('NMD',)}.get(kind, ())
    stages = [s for s in wanted if s in fits]
    if not stages:
        raise SystemExit('error: %s is a %s TFRecord: it trains %s, not %s'
                         % (tfrecord, kind, ', '.join(fits) or 'nothing here', ', '.join(wanted)))
    return stages


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--stages', default='NMD,FRSR,NatSR')
    p.add_argument('--shapes', default='small,paper')
    p.add_argument('--iters', type=int, default=3)
    p.add_argument('--precision', default='fp32')
    p.add_argument('--tfrecord', default=None,
                   help='also time the iterations with the trainers\' input pipeline on this TFRecord (input-bound check)')
    p.add_argument('--batch', type=int, default=16, help='batch of the --tfrecord check (default %(default)s)')
    args = p.parse_args(argv)
    tflog.init()
    from natsr import device
    print('device: %s; load average %s\n' % (device.device_name(), ' '.join(open('/proc/loadavg').read().split()[:3])
                                             if os.path.exists('/proc/loadavg') else 'n/a'))
    if args.tfrecord:
        stages = stages_of(args.tfrecord, args.stages.split(','))
        print('| stage | batch | HR patch | scale | fixed batch s / it | tf.data s / it | tf.data / fixed | '
              'pipeline alone batches / s | iterations / s (fixed) |')
        print('|---|---|---|---|---|---|---|---|---|')
        for stage in stages:
            r = input_bound(stage, args.batch, args.tfrecord, args.iters, args.precision)
            print('| %s | %d | %d | x%d | %.2f | %.2f | %.2f | %.1f | %.2f |'
                  % (stage, r['batch'], r['patch'], r['scale'], r['fixed_s'], r['tfdata_s'], r['ratio'],
                     r['pipeline_batches_s'], r['consumed_batches_s']), flush=True)
        return 0
    print('| stage | shape | batch | HR patch | s / iteration | patches / s |')
    print('|---|---|---|---|---|---|')
    for shape in args.shapes.split(','):
        batch, patch = SHAPES[shape]
        for stage in args.stages.split(','):
            sec = time_stage(stage, batch, patch, args.iters, args.precision)
            print('| %s | %s | %d | %d | %.3f | %.1f |' % (stage, shape, batch, patch, sec, batch / sec), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
