"""The one place that knows the TFRecord format of NatSR's training data.

Each record is a tf.train.Example with two raw uint8 byte features: `label` (HR patch)
and `image` (LR or ILR patch). Beside every TFRecord `X.tfrecord` lies `X.tfrecord.json`
(the sidecar): count, label_shape, image_shape, scale, kind ('NatSR' or 'NMD'), seed,
source folder and generator options. Readers take the patch shapes from the sidecar.
"""
import json
import os

import numpy as np


def sidecar_path(tfrecord):
    return tfrecord + '.json'


def load_sidecar(tfrecord):
    """The sidecar of `tfrecord` as a dict; FileNotFoundError naming what is missing."""
    if not os.path.isfile(tfrecord):
        raise FileNotFoundError('%s: TFRecord not found' % tfrecord)
    side = sidecar_path(tfrecord)
    if not os.path.isfile(side):
        raise FileNotFoundError('%s: sidecar not found (made by generate_Dataset beside the TFRecord)' % side)
    with open(side) as f:
        meta = json.load(f)
    for key in ('count', 'label_shape', 'image_shape', 'scale', 'kind'):
        if key not in meta:
            raise ValueError('%s: sidecar lacks %r' % (side, key))
    return meta


def serialize(label, image):
    """One record from uint8 HR patch `label` and uint8 LR / ILR patch `image`."""
    import tensorflow.compat.v1 as tf
    feature = {
        'label': tf.train.Feature(bytes_list=tf.train.BytesList(value=[np.ascontiguousarray(label, np.uint8).tobytes()])),
        'image': tf.train.Feature(bytes_list=tf.train.BytesList(value=[np.ascontiguousarray(image, np.uint8).tobytes()])),
    }
    # deterministic=True: protobuf writes map entries (the two features) in hash order otherwise,
    # which changes from one process to the next; sorted keys make the same data the same bytes.
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def writer(path):
    """A TFRecord writer for `serialize`d records (use as a context manager)."""
    import tensorflow.compat.v1 as tf
    return tf.io.TFRecordWriter(path)


def write_sidecar(tfrecord, meta):
    """Write the sidecar of `tfrecord` atomically (a temporary file renamed into place)."""
    for key in ('count', 'label_shape', 'image_shape', 'scale', 'kind'):
        if key not in meta:
            raise ValueError('sidecar of %s lacks %r' % (tfrecord, key))
    side = sidecar_path(tfrecord)
    tmp = '%s.tmp%d' % (side, os.getpid())
    try:
        with open(tmp, 'w') as f:
            json.dump(meta, f, indent=1, sort_keys=True)
            f.write('\n')
        os.replace(tmp, side)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_numpy(tfrecord, meta=None):
    """Yield the (label, image) uint8 arrays of every record of `tfrecord`, in file order."""
    import tensorflow.compat.v1 as tf
    meta = meta or load_sidecar(tfrecord)
    for record in tf.io.tf_record_iterator(tfrecord):
        yield parse_numpy(record, meta)


def parse_numpy(record, meta):
    """(label, image) uint8 arrays of one serialized record (for tests and tools)."""
    import tensorflow.compat.v1 as tf
    ex = tf.train.Example.FromString(record)
    get = lambda k: np.frombuffer(ex.features.feature[k].bytes_list.value[0], np.uint8)
    return get('label').reshape(meta['label_shape']), get('image').reshape(meta['image_shape'])


def dataset(tfrecord, batch_size, shuffle_buffer=1024, repeat=True, seed=None):
    """tf.data pipeline of (image, label) float32 batches in [0, 1], shapes from the sidecar.

    Returns (dataset, meta). Batches are complete (drop_remainder) so shapes are static.
    """
    import tensorflow.compat.v1 as tf
    meta = load_sidecar(tfrecord)
    label_shape, image_shape = list(meta['label_shape']), list(meta['image_shape'])

    def parse(record):
        f = tf.parse_single_example(record, {'label': tf.FixedLenFeature([], tf.string),
                                             'image': tf.FixedLenFeature([], tf.string)})
        label = tf.reshape(tf.decode_raw(f['label'], tf.uint8), label_shape)
        image = tf.reshape(tf.decode_raw(f['image'], tf.uint8), image_shape)
        return tf.cast(image, tf.float32) / 255.0, tf.cast(label, tf.float32) / 255.0

    ds = tf.data.TFRecordDataset(tfrecord)
    if repeat:
        ds = ds.repeat()
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed)
    ds = ds.map(parse, num_parallel_calls=tf.data.experimental.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(2)
    return ds, meta
