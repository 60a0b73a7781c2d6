"""The generators' shuffle writer: fixed-size (label, image) pairs in, one TFRecord out, each record
at a uniformly random place (a two-pass shuffle of 8-byte record indices in temporary shards), the
same bytes whatever the number of worker processes."""
import contextlib
import math
import os

import numpy as np

from generate_Dataset import patches, records, workdir

CHUNK_BYTES = 16 * 2 ** 20   # records transformed (pass 1) or framed (pass 2) at once


class ShuffleWriter:
    """Fixed-size (label, image) pairs in, one TFRecord in a uniformly random order out.

    Pass 1 (cutting.store, in the workers) appends each image's kept pairs, untransformed, to a patch
    store; `add` deals every (patch, transform) record, as an 8-byte index, to a random temporary
    shard. `write` (pass 2) loads one shard of indices at a time and permutes it, as if the shard
    held the records themselves, and has `frame_records` write the records at their places in
    the TFRecord; `publish` renames the TFRecord and its sidecar into place. All live in a hidden
    work folder beside the output, locked while this run lives. Use as a context manager: the
    folder is removed on exit, whatever happens.
    """

    def __init__(self, out, label_shape, image_shape, rng, est_bytes, shard_bytes, max_shards):
        """`est_bytes`: an upper bound of the records' size; at most `max_shards` shards of at most
        `shard_bytes` of records each (the record order depends on both)."""
        self.out, self.label_shape, self.image_shape = out, label_shape, image_shape
        self.size = int(np.prod(label_shape)) + int(np.prod(image_shape))
        self.rng, self.shard_bytes = rng, max(int(shard_bytes), self.size)
        self.max_shards = max_shards
        self.files = []
        self.dir, self.lock = workdir.make(out)
        try:
            k = min(max_shards, max(1, math.ceil(est_bytes / self.shard_bytes)))
            self.files = [open(os.path.join(self.dir, '%03d' % i), 'wb') for i in range(k)]
        except BaseException:
            self.__exit__()
            raise
        self.tfrecord, self.sidecar = os.path.join(self.dir, 'tfrecord'), os.path.join(self.dir, 'sidecar.json')
        self.count = 0
        self.stores, self.first, self.place = [], [], []   # store paths; per image: first patch, (store, offset)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for f in self.files:
            f.close()
        workdir.remove(self.dir, self.lock)

    def add(self, stored, modes):
        """The `Stored` patches of one image under every transform of `modes`, patch by patch and
        mode by mode, each record (patch number * 8 + mode) to a random shard."""
        if stored.path not in self.stores:
            self.stores.append(stored.path)
        first = self.first[-1] + self.place[-1][2] if self.first else 0
        self.first.append(first)
        self.place.append((self.stores.index(stored.path), stored.offset, stored.count))
        modes = np.asarray(modes, np.int64)
        step = max(1, CHUNK_BYTES // (len(modes) * self.size))
        for i in range(first, first + stored.count, step):
            ids = np.arange(i, min(i + step, first + stored.count), dtype=np.int64)
            codes = (ids[:, None] * 8 + modes).ravel()
            for k, part in self._deal(codes, self.rng.integers(len(self.files), size=len(codes))):
                self.files[k].write(part)
        self.count += stored.count * len(modes)

    @staticmethod
    def _deal(codes, ks):
        """(k, the codes[r] with ks[r] == k, in order) for every k drawn."""
        order = np.argsort(ks, kind='stable')
        return zip(np.unique(ks), np.split(codes[order], np.flatnonzero(np.diff(ks[order])) + 1))

    def write(self, pool, bar=None):
        """Pass 2, in `pool` (pool.Pool: its worker processes or this one)."""
        for f in self.files:
            f.close()
        open(self.tfrecord, 'wb').close()
        for n in pool.map(frame_records, self._calls()):
            if bar is not None:
                bar.update(n)

    def _calls(self):
        """The `frame_records` calls of every run of records, in file order."""
        lb = int(np.prod(self.label_shape))
        at, framed = 0, records.frame(0, lb, self.size - lb)[0].shape[1]      # bytes of a framed record
        step = max(1, CHUNK_BYTES // self.size)
        first, place = np.array(self.first, np.int64), np.array([q[:2] for q in self.place], np.int64).reshape(-1, 2)
        for f in self.files:
            for codes in self._drain(np.fromfile(f.name, np.int64)):
                for i in range(0, len(codes), step):
                    c = codes[i:i + step]
                    image = np.searchsorted(first, c >> 3, 'right') - 1
                    offsets = place[image, 1] + ((c >> 3) - first[image]) * self.size
                    yield (self.tfrecord, at, self.stores, place[image, 0], offsets, c & 7,
                                            self.label_shape, self.image_shape, self.out)
                    at += len(c) * framed
            os.remove(f.name)

    def _drain(self, codes):
        """The records of one shard in their permuted order (arrays of codes); a shard too big to
        have been loaded (more than shard_bytes of records) is dealt out again into smaller ones."""
        n = len(codes)
        if n * self.size > self.shard_bytes and n > 1:
            parts = [[] for _ in range(min(self.max_shards, 2 * math.ceil(n * self.size / self.shard_bytes)))]
            chunk = max(1, self.shard_bytes // (2 * self.size))
            for i in range(0, n, chunk):
                some = codes[i:i + chunk]
                for k, part in self._deal(some, self.rng.integers(len(parts), size=len(some))):
                    parts[k].append(part)
            for part in parts:
                yield from self._drain(np.concatenate(part) if part else codes[:0])
            return
        yield codes[self.rng.permutation(n)]

    def publish(self):
        """Rename the TFRecord, then its sidecar, into place (an old sidecar goes first)."""
        if os.path.exists(records.sidecar_path(self.out)):
            os.remove(records.sidecar_path(self.out))
        os.replace(self.tfrecord, self.out)
        os.replace(self.sidecar, records.sidecar_path(self.out))


def frame_records(tfrecord, at, stores, which, offsets, modes, label_shape, image_shape, out):
    """Pass 2 on one run of consecutive records of the TFRecord: read each record's pair from the
    patch stores (store `which[r]`, byte `offsets[r]`), apply its transform `modes[r]`, frame the
    records (records.py) and write them at byte `at` of the (pre-existing) `tfrecord`. Returns
    the number of records. A write error is a DataError naming `out`."""
    n, lb = len(which), int(np.prod(label_shape))
    pair = lb + int(np.prod(image_shape))
    order = np.argsort(modes, kind='stable')          # pairs read grouped by transform
    pairs = np.empty((n, pair), np.uint8)
    with contextlib.ExitStack() as stack:
        fds = [stack.enter_context(open(q, 'rb', buffering=0)).fileno() for q in stores]
        for row, r in zip(pairs, order):
            if os.preadv(fds[which[r]], [row], int(offsets[r])) != pair:
                raise RuntimeError('%s: patch store shorter than expected' % stores[which[r]])
    rows, image_cols, label_cols = records.frame(n, lb, pair - lb)
    labels = rows[:, label_cols].reshape((n,) + tuple(label_shape), copy=False)
    images = rows[:, image_cols].reshape((n,) + tuple(image_shape), copy=False)
    first = 0
    for m, k in zip(*np.unique(modes, return_counts=True)):
        r, block = order[first:first + k], pairs[first:first + k]
        _put(labels, r, block[:, :lb].reshape((k,) + tuple(label_shape)), m)
        _put(images, r, block[:, lb:].reshape((k,) + tuple(image_shape)), m)
        first += k
    with workdir.output_errors(out), open(tfrecord, 'r+b') as f:
        f.seek(at)
        f.write(records.seal(rows))
    return n


def _put(dst, r, src, mode):
    """dst[r] = patches.augment(src, mode, (1, 2)) for N x P x P x 3 uint8 stacks: whole 3-byte pixels
    where rows stay rows (modes 0, 1), else channel by channel (numpy's faster copy of a transposed
    view; docs/benchmarks.md)."""
    src = patches.augment(src, mode, (1, 2))
    if mode < 2:
        _pixels(dst)[r] = _pixels(src)
        return
    for c in range(3):
        dst[r, ..., c] = src[..., c]


def _pixels(stack):
    """An N x P x P x 3 uint8 stack as N x P x P items of 3 bytes (one item per pixel to copy)."""
    return stack.view('V3')[..., 0]
