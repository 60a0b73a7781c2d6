"""Weights as TF-named .npz parts: PREFIX.part0.npz, PREFIX.part1.npz, ... (name -> array, each part
under PART_BYTES), what tools/torch_train.py reads and writes and tools/convert_weights.py converts.
numpy only."""
import glob
import os

import numpy as np

import utils

PART_BYTES = 15 * 2 ** 20


def save_parts(weights, prefix):
    """Write `weights` (name -> array) as PREFIX.part0.npz, part1.npz, ... each under PART_BYTES,
    atomically (utils.atomic_path); older parts beyond the new count are removed."""
    parts, cur, size = [], {}, 0
    for name in sorted(weights):
        if cur and size + weights[name].nbytes > PART_BYTES:
            parts.append(cur)
            cur, size = {}, 0
        cur[name], size = weights[name], size + weights[name].nbytes
    parts.append(cur)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    for i, part in enumerate(parts):
        with utils.atomic_path('%s.part%d.npz' % (prefix, i)) as tmp:
            np.savez(tmp, **part)
    for old in _parts(prefix)[len(parts):]:
        os.remove(old)


def _parts(prefix):
    files = [f for f in glob.glob(glob.escape(prefix) + '.part*.npz') if f[len(prefix) + 5:-4].isdigit()]
    return sorted(files, key=lambda f: int(f[len(prefix) + 5:-4]))


def load_parts(prefix):
    """The weights (name -> float32 array) of PREFIX.part*.npz."""
    files = _parts(prefix)
    if not files:
        raise SystemExit('%s.part*.npz: no weights found' % prefix)
    out = {}
    for f in files:
        with np.load(f) as z:
            out.update({k: z[k] for k in z.files})
    return out


