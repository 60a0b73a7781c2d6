import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
SHARED = os.path.abspath(os.environ.get('NATSR_SHARED', os.path.join(ROOT, '..', 'shared')))

import pytest  # noqa: E402

import tflog  # noqa: E402

tflog.init()  # as every command: TensorFlow's start-up lines off, graph mode (the tests build graphs as the trainers do)


def shared_path(*parts):
    """Path under ../shared, or skip the test with a clear reason when it is absent."""
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        pytest.skip('reference data not found: %s (../shared beside the checkout)' % path)
    return path


def make_tfrecord(path, kind, count, patch, scale=4, seed=0):
    """A tiny TFRecord + sidecar as generate_Dataset writes them: random smooth-ish uint8
    patches; `image` is the HR patch subsampled by `scale` (NatSR) or a blurred copy (NMD)."""
    import json
    import numpy as np
    import tensorflow.compat.v1 as tf
    from generate_Dataset import records
    rng = np.random.RandomState(seed)
    with tf.io.TFRecordWriter(path) as w:
        for _ in range(count):
            hr = rng.randint(0, 256, (patch, patch, 3)).astype(np.uint8)
            if kind == 'NatSR':
                image = hr[::scale, ::scale]
            else:
                image = ((hr.astype(np.float32) + np.roll(hr, 1, 0) + np.roll(hr, 1, 1)) / 3).astype(np.uint8)
            w.write(records.serialize(hr, image))
    meta = {'count': count, 'label_shape': [patch, patch, 3], 'image_shape': list(image.shape),
            'scale': scale, 'kind': kind, 'seed': seed}
    with open(records.sidecar_path(path), 'w') as f:
        json.dump(meta, f)
    return path


def random_checkpoint(prefix, build, scope):
    """A weights-only checkpoint of a freshly initialised network."""
    import tensorflow.compat.v1 as tf
    with tf.Graph().as_default():
        build(tf.placeholder(tf.float32, [None, None, None, 3]))
        saver = tf.train.Saver(tf.global_variables(scope + '/'))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            saver.save(sess, prefix, write_state=False)
    return prefix
