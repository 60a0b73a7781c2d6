"""test.py's report: the metrics table on stdout, the metrics CSV (one per job, each row ending with
the job record: model, checkpoint, a hash of its weights, data folders, options), and the summary
lines and exit status of a run."""
import csv
import hashlib
import json
import math
import os
import re
import sys

import numpy as np

from natsr.process import exits
from natsr.evaluation import metrics
import utils

EXIT_FAILED = exits.FAILED


def print_table(rows, columns):
    width = max([len('image'), len('mean')] + [len(r['image']) for r in rows])
    print('%-*s' % (width, 'image') + ''.join('  %7s' % metrics.METRICS[c].label for c in columns))
    for r in rows:
        print('%-*s' % (width, r['image']) + ''.join('  %7s' % (metrics.METRICS[c].fmt % r[c]) for c in columns))


def write_csv(path, rows, columns, job, qualities=None):
    """The metrics, one row per image then the mean, then the quality its input JPEG was saved at
    (`qualities`: {image: quality}; empty for other files), each row ending with the `job` record."""
    qualities = qualities or {}
    with utils.atomic_path(path) as tmp:
        with open(tmp, 'w', newline='') as f:
            w = csv.writer(f)
            w.writerow(['image'] + columns + ['jpeg_quality'] + list(job))
            for r in rows:
                q = qualities.get(r['image']) if r['image'] != 'mean' else None
                w.writerow([r['image']] + ['%.6f' % r[c] for c in columns] + ['' if q is None else q] +
                           list(job.values()))


def weights_hash(weights):
    """12 hex digits of SHA-256 over the weights ({name: array}): names, shapes and values."""
    h = hashlib.sha256()
    for name in sorted(weights):
        a = np.ascontiguousarray(weights[name])
        h.update(('%s %s %s;' % (name, a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:12]


def job_record(job, gens):
    """What produced the scores of `job` (job.Job): model, checkpoint (a blend's label names its mode)
    and a hash of the weights of `gens` (the sr.Generators: none for bicubic, two for the output
    blend), data folders, options; `engine` where it is not TensorFlow (its own CSV name)."""
    if len(gens) > 1:
        weights = {'%d/%s' % (i, k): v for i, g in enumerate(gens) for k, v in g.weights().items()}
    else:
        weights = gens[0].weights() if gens else None
    gen = gens[0] if gens else None
    record = {'model': job.model, 'scale': job.scale,
              'checkpoint': job.checkpoint_path(),
              'weights': weights_hash(weights) if gens else '',
              'datapath': 'scikit-image sample photos' if job.default_job else os.path.abspath(job.datapath),
              'labelpath': os.path.abspath(job.labelpath) if job.labelpath else '',
              'tile': job.tile or 'auto', 'precision': job.precision if gen is not None else ''}
    if job.engine != 'tensorflow':
        record['engine'] = job.engine
    return record


def csv_name(record):
    """metrics_<data>_<checkpoint>_<hash>.csv: the LR folder and its parent, the checkpoint (with its
    trial folder), and 8 hex digits of the whole job record: one job per name."""
    def tail(path, n):
        return '-'.join(p for p in os.path.normpath(path).split(os.sep)[-n:] if p)
    data = 'samples' if record['datapath'] == 'scikit-image sample photos' else tail(record['datapath'], 2)
    ckpt = record['checkpoint']
    ckpt = tail(ckpt, 2 if re.match(r'model-\d+$', os.path.basename(ckpt)) else 1) if ckpt else 'bicubic'
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:8]
    return re.sub(r'[^\w.-]+', '_', 'metrics_%s_%s_%s.csv' % (data, ckpt, digest))


def mean_row(rows, columns):
    row = {'image': 'mean'}
    for c in columns:
        vals = [r[c] for r in rows if not math.isnan(r[c])]
        row[c] = float(np.mean(vals)) if vals else math.nan
    return row


def _plural(n, word='image'):
    return '%d %s%s' % (n, word, '' if n == 1 else 's')


def report(job, tally, record, csv_path):
    """Print the table and the summary of a run (pipeline.Tally), write the CSV; the exit status."""
    if tally.stop:
        sys.stdout.flush()
        print('error: %s; stopped: the %s saved before it %s kept in %s, no metrics written'
              % (tally.stop, _plural(tally.saved), 'is' if tally.saved == 1 else 'are', job.outdir), file=sys.stderr)
        return EXIT_FAILED
    done = len(job.items) - tally.failed
    rows = tally.rows
    if rows:
        rows.append(mean_row(rows, job.columns))
        print_table(rows, job.columns)
        try:
            write_csv(csv_path, rows, job.columns, record, {it.name: it.jpeg_quality for it in job.items})
        except OSError as e:
            sys.stdout.flush()
            print('error: cannot write metrics to %s (%s)' % (csv_path, e.strerror or e), file=sys.stderr)
            return EXIT_FAILED
        print('metrics: %s' % csv_path)
    if tally.saved:
        print('saved %s to %s' % (_plural(tally.saved), job.outdir))
    if done:
        print('%s super-resolved in %.2f s (%.3f s per image)'
              % (_plural(done), tally.seconds, tally.seconds / done))
    if tally.failed:
        print('error: %d of %d images failed (see above)' % (tally.failed, len(job.items)), file=sys.stderr)
        return EXIT_FAILED
    return 0
