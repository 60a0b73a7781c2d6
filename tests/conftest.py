import functools
import os
import sys

import pytest

from natsr.process import tflog   # the project root is on sys.path: pytest.ini's pythonpath

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.abspath(os.environ.get('NATSR_SHARED', os.path.join(ROOT, '..', 'shared')))
tflog.init()  # as every command: TensorFlow's start-up lines off, graph mode (the tests build graphs as the trainers do)


def shared_path(*parts):
    """Path under ../shared, or skip the test with a clear reason when it is absent."""
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        pytest.skip('reference data not found: %s (../shared beside the checkout)' % path)
    return path


def tf_example(label, image):
    """TensorFlow's serialized tf.train.Example of a (label, image) pair of uint8 arrays."""
    import tensorflow.compat.v1 as tf
    feature = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.tobytes()]))
               for k, v in (('label', label), ('image', image))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


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
            w.write(tf_example(hr, image))
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


def load_script_module():
    """test.py as a module (its name clashes with the standard library's `test` package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('natsr_test_script', os.path.join(ROOT, 'test.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


LOAD_TF2 = '''
import sys
import numpy as np
import tensorflow as tf
assert tf.executing_eagerly()
model = tf.saved_model.load(sys.argv[1])
fn = model.signatures['serving_default']
img = np.load(sys.argv[2])
out = fn(image=tf.constant(img[None]))['image']
assert out.dtype == tf.uint8, out.dtype
np.save(sys.argv[3], out.numpy()[0])
'''


def load_in_tf2(saved_model, tmp_path, onednn):
    """Run the SavedModel on tmp_path/in.npy in a plain TF2 (eager) process; the uint8 result."""
    import subprocess
    import numpy as np
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', TF_ENABLE_ONEDNN_OPTS='1' if onednn else '0')
    res = subprocess.run([sys.executable, '-c', LOAD_TF2, str(saved_model), str(tmp_path / 'in.npy'),
                          str(tmp_path / 'out.npy')], cwd=str(tmp_path), capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    got = np.load(tmp_path / 'out.npy')
    assert got.dtype == np.uint8 and got.ndim == 3
    return got


ORIGINAL = ('reference', 'natsr-original')
# what the original checkpoints hold beside the network weights
NOT_WEIGHTS = ('beta1_power', 'beta2_power', 'global_step', 'noise_sigma', 'alpha')


def original_variables(name):
    """{name: (shape, dtype)} of the original checkpoint's network weights (.index only)."""
    import tensorflow.compat.v1 as tf
    reader = tf.train.load_checkpoint(os.path.join(shared_path(*ORIGINAL), name))
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    return {n: (list(shapes[n]), dtypes[n].name) for n in shapes
            if n.split('/')[-1] not in NOT_WEIGHTS and '/Adam' not in n}


@functools.lru_cache(maxsize=None)
def our_variables(network):
    """{name: (shape, dtype)} of every variable a tf.train.Saver of a fresh graph would save.

    `network`: 2, 3, 4 (FRACTAL at that scale) or 'NMD'."""
    import tensorflow.compat.v1 as tf
    from model import FRACTAL, NMD
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, None, None, 3])
        NMD(x) if network == 'NMD' else FRACTAL(x, network)
        # what a default tf.train.Saver() saves
        saveable = tf.global_variables() + tf.get_collection(tf.GraphKeys.SAVEABLE_OBJECTS)
        return {v.op.name: (v.get_shape().as_list(), v.dtype.base_dtype.name) for v in saveable}
