"""Seconds per training iteration of the three stages (NMD, FRSR, NatSR) with the TensorFlow
trainers' own graphs (train.Trainer, Train_NMD.train.NMDTrainer), on a fixed in-memory batch, so
that reading data does not count. Median of --iters timed iterations after one warm-up.

    python bench/train_speed.py                                  # paper and small shapes, all stages
    python bench/train_speed.py --shapes small --stages FRSR --iters 5

Shapes: `paper` = batch 32 of 48x48 LR / 192x192 HR patches (NMD: 32 HR patches of 192);
`small` = batch 4 of 24x24 LR / 96x96 HR (NMD: 4 patches of 96). x4, random weights.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
import tflog  # noqa: E402

tflog.quiet()
import numpy as np  # noqa: E402

SHAPES = {'paper': (32, 192), 'small': (4, 96)}   # (batch, HR patch side)
SCALE = 4


def stage_graph(stage, batch, patch, precision):
    """(session config, fetches) of one training iteration of `stage` on constant random patches."""
    import tensorflow.compat.v1 as tf
    import config
    import loop
    import train
    from Train_NMD import config as nmd_config
    from Train_NMD import train as nmd_train
    rng = np.random.RandomState(0)
    hr = tf.constant(rng.rand(batch, patch, patch, 3).astype(np.float32))
    if stage == 'NMD':
        args = loop.config_parser(nmd_config, '').parse_args(['--batch_size', str(batch)])
        ilr = tf.constant(rng.rand(batch, patch, patch, 3).astype(np.float32))
        trainer = nmd_train.NMDTrainer(args, ilr, hr)
    else:
        args = loop.config_parser(config, '').parse_args(['--model', stage, '--batch_size', str(batch)])
        lr = tf.constant(rng.rand(batch, patch // SCALE, patch // SCALE, 3).astype(np.float32))
        trainer = train.Trainer(args, lr, hr)
    return loop.session_config(precision), trainer.fetches


def time_stage(stage, batch, patch, iters, precision):
    import tensorflow.compat.v1 as tf
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        cfg, fetches = stage_graph(stage, batch, patch, precision)
        with tf.Session(config=cfg) as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(fetches)                                   # warm-up: graph optimisation, allocations
            times = []
            for _ in range(iters):
                t = time.perf_counter()
                sess.run(fetches)
                times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--stages', default='NMD,FRSR,NatSR')
    p.add_argument('--shapes', default='small,paper')
    p.add_argument('--iters', type=int, default=3)
    p.add_argument('--precision', default='fp32')
    args = p.parse_args(argv)
    import loop  # noqa: F401  (graph mode)
    import sr
    print('device: %s\n' % sr.device_name())
    print('| stage | shape | batch | HR patch | s / iteration | patches / s |')
    print('|---|---|---|---|---|---|')
    for shape in args.shapes.split(','):
        batch, patch = SHAPES[shape]
        for stage in args.stages.split(','):
            sec = time_stage(stage, batch, patch, args.iters, args.precision)
            print('| %s | %s | %d | %d | %.2f | %.1f |' % (stage, shape, batch, patch, sec, batch / sec), flush=True)


if __name__ == '__main__':
    main()
