"""The one place that knows the TFRecord format of NatSR's training data.

Each record is a tf.train.Example with two raw uint8 byte features: `label` (HR patch)
and `image` (LR or ILR patch). Beside every TFRecord `X.tfrecord` lies `X.tfrecord.json`
(the sidecar): count, label_shape, image_shape, scale, kind ('NatSR' or 'NMD'), seed,
source folder and generator options. Readers take the patch shapes from the sidecar.

Records are written without TensorFlow (`frame`, `seal`: the bytes of TensorFlow's serializer and
tf.io.TFRecordWriter, tested); readers use TensorFlow.
"""
import json
import os
import struct

import crc32c
import numpy as np

import utils


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


MAKERS = {'NatSR': 'generate_NatSR.py', 'NMD': 'generate_TrainNMD.py'}   # kind -> the script that writes it


def check(meta, kind, scale=None, patch=None):
    """Check the sidecar `meta` of a TFRecord for a trainer of `kind` records ('NatSR': FRSR and
    NatSR; 'NMD') at `scale` (None: any), asked for `patch`-pixel HR patches (--patch_size; None
    or 0: not asked, the TFRecord's). Returns `meta`; a ValueError of one line (without the
    TFRecord's name) says what does not fit."""
    if meta['kind'] != kind:
        raise ValueError('a %s TFRecord; this trainer needs a %s one, from %s' % (meta['kind'], kind, MAKERS[kind]))
    if scale is not None and meta['scale'] != scale:
        raise ValueError('made for x%d, --scale is %d' % (meta['scale'], scale))
    side = meta['label_shape'][0]
    if patch and side != patch:
        raise ValueError("holds %d-pixel HR patches, --patch_size is %d (leave --patch_size out: the "
                         "TFRecord's sidecar sets it)" % (side, patch))
    return meta


def record_bytes(meta):
    """The bytes of one framed record of a TFRecord with sidecar `meta` (all its records have this size)."""
    label_len, image_len = int(np.prod(meta['label_shape'])), int(np.prod(meta['image_shape']))
    head, middle = example_parts(label_len, image_len)
    return 12 + len(head) + image_len + len(middle) + label_len + 4


def check_size(tfrecord, meta):
    """A ValueError of one line (naming the file) unless `tfrecord` has the size that the `count`
    records of its sidecar `meta` make: a truncated (or appended-to) file, found without reading it."""
    size, want = os.path.getsize(tfrecord), meta['count'] * record_bytes(meta)
    if size != want:
        raise ValueError('%s: damaged TFRecord: %d bytes, its sidecar\'s %d records of %d bytes make %d (%s); '
                         'regenerate it' % (tfrecord, size, meta['count'], record_bytes(meta), want,
                                            'truncated' if size < want else 'longer'))


_CHECKED = {}   # check_file's sidecars, by the identity of the TFRecord and sidecar files


def check_file(tfrecord):
    """The sidecar of `tfrecord`, after check_size: the checks that need no TensorFlow, for a trainer
    to run before it starts TensorFlow. FileNotFoundError / ValueError of one line. A run reads the
    sidecar once: the trainer's data check after start-up gets the sidecar read before it, as long
    as neither file has changed."""
    try:
        key = tuple((os.path.abspath(p), st.st_size, st.st_mtime_ns, st.st_ino)
                    for p in (tfrecord, sidecar_path(tfrecord)) for st in [os.stat(p)])
    except OSError:
        key = None   # load_sidecar names what is missing
    if key in _CHECKED:
        return dict(_CHECKED[key])
    meta = load_sidecar(tfrecord)
    check_size(tfrecord, meta)
    if key is not None:
        _CHECKED[key] = dict(meta)
    return meta


def problem_in_command(argv, flags):
    """The one-line problem (check_file) of the first TFRecord that one of `flags` names in the
    command line `argv`, or None (none named, all fine, or --help / --export asked)."""
    if any(a in ('-h', '--help') or a == '--export' or a.startswith('--export=') for a in argv):
        return None
    for flag in flags:
        path = utils.flag_value(argv, flag)
        if path is None:
            continue
        try:
            check_file(path)
        except (OSError, ValueError) as e:
            return str(e)
    return None


def _varint(n):
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _head(field, length):
    """Protobuf header of a length-delimited field (wire type 2) of `length` bytes."""
    return bytes([field << 3 | 2]) + _varint(length)


def _entry_head(key, length):
    """(bytes before the value, whole size) of one entry `key` -> Feature(bytes_list=[value of
    `length` bytes]) of the Features map."""
    value = _head(1, length)                                   # BytesList.value
    feature = _head(1, len(value) + length) + value            # Feature.bytes_list
    entry = _head(1, len(key)) + key + _head(2, len(feature) + length) + feature
    head = _head(1, len(entry) + length) + entry              # Features.feature (a map entry)
    return head, len(head) + length


def example_parts(label_len, image_len):
    """(head, middle): a record of a `label_len`-byte label and an `image_len`-byte image is
    head + image + middle + label, the bytes of tf.train.Example(...).SerializeToString(
    deterministic=True): map entries in key order ('image' before 'label'), tested against it."""
    image_head, image_size = _entry_head(b'image', image_len)
    label_head, label_size = _entry_head(b'label', label_len)
    return _head(1, image_size + label_size) + image_head, label_head   # Example.features


def _masked_crc(data):
    crc = crc32c.crc32c(data)
    return ((crc >> 15 | crc << 17) + 0xA282EAD8) & 0xFFFFFFFF


def _length_header(length):
    """uint64 little-endian length and its masked crc32c: the first 12 bytes of a framed record."""
    n = struct.pack('<Q', length)
    return n + struct.pack('<I', _masked_crc(n))


def frame(n, label_len, image_len):
    """(rows, image columns, label columns): an n x (framed record size) uint8 array holding the
    constant bytes of n framed records of a `label_len`-byte label and an `image_len`-byte image,
    and the column slices where each row's image and label go. Fill those, then `seal` it: each
    row is then the bytes tf.io.TFRecordWriter writes for the tf.train.Example of (label, image)."""
    head, middle = example_parts(label_len, image_len)
    length = _length_header(len(head) + image_len + len(middle) + label_len)
    widths = [len(length + head), image_len, len(middle), label_len]
    rows = np.empty((n, sum(widths) + 4), np.uint8)
    at = np.cumsum([0] + widths)
    rows[:, :at[1]] = np.frombuffer(length + head, np.uint8)      # constant parts broadcast to every row
    rows[:, at[2]:at[3]] = np.frombuffer(middle, np.uint8)
    return rows, slice(at[1], at[2]), slice(at[3], at[4])


def seal(rows):
    """Write the masked crc32c of every record of the `frame` rows into their last 4 bytes; `rows`."""
    crcs = np.array([_masked_crc(row) for row in rows[:, 12:-4]], '<u4')
    rows[:, -4:] = crcs.view(np.uint8).reshape(-1, 4)
    return rows


def write_sidecar(tfrecord, meta, path=None):
    """Write the sidecar of `tfrecord` atomically (utils.atomic_path), at its
    place beside it or at `path` (to be moved there later)."""
    for key in ('count', 'label_shape', 'image_shape', 'scale', 'kind'):
        if key not in meta:
            raise ValueError('sidecar of %s lacks %r' % (tfrecord, key))
    with utils.atomic_path(path or sidecar_path(tfrecord)) as tmp:
        with open(tmp, 'w') as f:
            json.dump(meta, f, indent=1, sort_keys=True)
            f.write('\n')


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


def dataset(tfrecord, batch_size, shuffle_buffer=1024, repeat=True, seed=None, meta=None, degrade=None):
    """tf.data pipeline of (image, label) float32 batches in [0, 1], shapes from the sidecar (`meta`,
    where the caller has read it). `degrade`: a function (image, index) -> image applied to each
    example's image (the LR patch; never the label) after shuffling, `index` counting the examples
    read (natsr.training.degradation, --degrade).

    Returns (dataset, meta). Batches are complete (drop_remainder) so shapes are static.
    """
    import tensorflow.compat.v1 as tf
    meta = meta or load_sidecar(tfrecord)
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
    if degrade is not None:
        ds = ds.enumerate().map(lambda i, pair: (degrade(pair[0], i), pair[1]),
                                num_parallel_calls=tf.data.experimental.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(2)
    return ds, meta
