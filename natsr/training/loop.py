"""What the three training stages (NMD, FRSR, NatSR) share: flags from a config module; the stage
driver (`Stage`, `train_stage`: set-up, data check, resume or start); the step loop with its
progress bar, summaries, interval checkpoints (trials.save_checkpoint), Ctrl-C / SIGTERM
checkpoint and NaN and damaged-data guards; the command line's exit statuses."""
import argparse
import math
import os
import shutil
import sys
import tempfile

import tensorflow.compat.v1 as tf
from tqdm import tqdm

from natsr.training.trials import resume, save_checkpoint, trial_folder
from natsr.device import TRAIN_PRECISIONS
from natsr.process import exits
from generate_Dataset import records
from utils import error_line


class TrainingError(exits.UsageError):
    """A problem the user can fix (missing file, mismatching checkpoint); printed as one line."""


def str2bool(s):
    if s.lower() in ('1', 'true', 'yes', 'y', 'on'):
        return True
    if s.lower() in ('0', 'false', 'no', 'n', 'off'):
        return False
    raise argparse.ArgumentTypeError('expected a boolean, got %r' % s)


def config_parser(config, description):
    """An ArgumentParser with one flag per upper-case constant of `config` (`--batch_size` for
    BATCH_SIZE), defaulting to the constant, plus the original's --gpu --trial --step, and
    --keep_checkpoints. PATCH_SIZE is the one exception: the patch side is the TFRecord's (its
    sidecar says it), so --patch_size defaults to None and, when given, only checks the data;
    the constant (the paper's value, 0 where there is none) shows in the help."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument('--gpu', default=None, help='GPU index to use (sets CUDA_VISIBLE_DEVICES); CPU when none is visible')
    p.add_argument('--trial', type=int, default=0, help='trial number: checkpoints and logs go to <checkpoint_dir>/<run>_trial<N>')
    p.add_argument('--step', type=int, default=None, help='resume from the checkpoint of this step (default: the latest of the trial)')
    p.add_argument('--keep_checkpoints', type=int, default=5, metavar='K',
                   help='keep the newest K checkpoints of the trial, and every one exported with --export '
                        '(0: keep all); default: %(default)s')
    p.add_argument('--deterministic', action='store_true',
                   help="bit-reproducible runs from --seed on CPU: Grappler's graph rewrites off (they differ from "
                        'one session to the next); fp32 only, slower (docs/training.md, "Reproducibility")')
    p.add_argument('--precision', default='fp32', choices=TRAIN_PRECISIONS,
                   help='bf16: mixed precision (bf16 compute, fp32 weights and loss) on CPUs with AVX512_BF16 / '
                        'AMX-BF16; default: %(default)s')
    for name in sorted(n for n in dir(config) if n.isupper()):
        value = getattr(config, name)
        if name == 'PATCH_SIZE':
            p.add_argument('--patch_size', type=int, default=None,
                           help="HR patch side; default: the TFRecord's, from its sidecar; a different value "
                                'is an error%s' % (' (the paper: %d)' % value if value else ''))
            continue
        kind = str2bool if isinstance(value, bool) else (type(value) if value is not None else str)
        p.add_argument('--' + name.lower(), type=kind, default=value, help='default: %(default)s')
    return p


def check_records(tfrecord, kind, scale=None, patch_size=None):
    """The sidecar of the TFRecord `tfrecord`, checked (records.check) for a stage that trains on
    `kind` records ('NatSR' or 'NMD') at `scale`, with --patch_size `patch_size` (None or 0: not
    given; the patch size is the TFRecord's); a one-line TrainingError otherwise."""
    try:
        meta = records.check_file(tfrecord)
    except ValueError as e:
        raise TrainingError(str(e))
    try:
        return records.check(meta, kind, scale, patch_size)
    except ValueError as e:
        raise TrainingError('%s: %s' % (tfrecord, e))


class Events(object):
    """The trial's TensorBoard events file (tf.summary.FileWriter of `folder`, with `graph`), made at
    the first completed step or summary: a run that trains nothing leaves none."""

    def __init__(self, folder, graph=None):
        self.folder, self.graph, self.writer = folder, graph, None

    def open(self):
        if self.writer is None:
            self.writer = tf.summary.FileWriter(self.folder, self.graph)
        return self.writer

    def add_summary(self, summary, step):
        self.open().add_summary(summary, step)

    def flush(self):
        if self.writer is not None:
            self.writer.flush()


def train_loop(sess, fetches, step, saver, trial_dir, max_steps, checkpoint_interval,
               summary=None, writer=None, summary_interval=0, after_step=None, feed=None, keep=5, data=None):
    """Run `fetches['train']` until the global `step` reaches `max_steps`.

    `fetches`: dict with 'train' and scalar losses to show and to check for NaN / Inf.
    `after_step(step)`: called after each step (the NMD's validation and curriculum).
    Checkpoints (save_checkpoint: all or nothing, the newest `keep` kept) every
    `checkpoint_interval` steps, at the end, on Ctrl-C / SIGTERM and when the TFRecord `data`
    turns out damaged (the last completed step, then a one-line TrainingError); a non-finite loss
    stops without saving, so the last checkpoint on disk stays good.
    Returns the last step and the last losses.
    """
    os.makedirs(trial_dir, exist_ok=True)
    current = saved_at = sess.run(step)   # the checkpoint of the first step is on disk (or step 0)
    losses = {}
    bar = tqdm(total=max_steps, initial=current, dynamic_ncols=True, file=sys.stderr, desc='train')

    def save():
        nonlocal saved_at
        if current != saved_at:
            save_checkpoint(sess, saver, trial_dir, current, keep, saved_at)
            saved_at = current

    def where():
        return ('the checkpoint of step %d is in %s' % (current, trial_dir) if current
                else 'nothing was trained yet')

    with tf.control_dependencies([fetches['train']]):
        step_after = tf.identity(step.read_value())  # read once the update is applied
    with exits.sigterm_interrupts():   # SIGTERM ends with a checkpoint, as Ctrl-C does
        try:
            while current < max_steps:
                run = dict(fetches, step=step_after)
                with_summary = summary is not None and summary_interval and (current + 1) % summary_interval == 0
                if with_summary:
                    run['summary'] = summary
                out = sess.run(run, feed_dict=feed)
                bad = [k for k, v in out.items() if k not in ('train', 'summary', 'step') and not math.isfinite(float(v))]
                if bad:
                    raise TrainingError('%s is %s at step %d: training stopped; the last good checkpoint '
                                        'is step %d in %s' % (bad[0], out[bad[0]], out['step'], saved_at, trial_dir))
                current = int(out['step'])
                if writer is not None:
                    writer.open()
                losses = {k: float(v) for k, v in out.items() if k not in ('train', 'summary', 'step')}
                if with_summary:
                    writer.add_summary(out['summary'], current)
                if after_step is not None:
                    after_step(current)
                bar.update(current - bar.n)
                bar.set_postfix({k: '%.4g' % v for k, v in losses.items()}, refresh=False)
                if checkpoint_interval and current % checkpoint_interval == 0:
                    save()
        except KeyboardInterrupt as e:
            bar.close()
            save()
            raise exits.Interrupted(exits.signum_of(e), 'interrupted at step %d: %s' % (current, where())) from None
        except tf.errors.DataLossError as e:  # a damaged record: the batch of step current + 1 failed
            bar.close()
            save()
            raise TrainingError('%s: damaged TFRecord (%s) at step %d; %s: repair or regenerate the '
                                'TFRecord, then run the same command again'
                                % (data, error_line(e), current + 1, where()))
        finally:
            bar.close()
    save()
    if writer is not None:
        writer.flush()
    return current, losses


def run_main(parser, stage, argv, example):
    """The trainers' command line: train `stage` (a module with train(args) and export(args,
    prefix)), or with --export PREFIX write its shipping checkpoint; returns the exit status."""
    parser.add_argument('--export', metavar='PREFIX', default=None,
                        help='write the weights of the trial (latest or --step) to PREFIX, e.g. %s, and exit' % example)
    args = parser.parse_args(argv)
    if args.export:
        return main_guard(lambda: stage.export(args, args.export))
    return main_guard(lambda: stage.train(args))


def main_guard(fn):
    """Run `fn()` under the exit statuses of exits.py: 0; 2 after one line for a TrainingError,
    CheckpointError, PrecisionError or a file system error (a missing file, a full disk); 130 / 143
    after Ctrl-C / SIGTERM, once the checkpoint of the last completed step is saved."""
    def body():
        fn()                        # what it returns is not an exit status
    return exits.main(body)


# ---------------------------------------------------------------- the stage driver

def trial_dir(name, args):
    """<checkpoint_dir>/<name>_x<scale>_trial<N>: the folder of a trial of the stage `name`."""
    return os.path.join(args.checkpoint_dir, '%s_x%d_trial%d' % (name, args.scale, args.trial))


class Stage(object):
    """A training stage that train_stage drives (train.FRSR, train.NatSR, Train_NMD.train.NMDStage),
    made from the command line's `args`. It names its trials (`name`) and the TFRecords it trains
    on (`kind`, see records.check), and gives:
      cluster()                   the devices (a distribute.Cluster)
      build(lr, hr, strategy)     the graph on a batch: sets `step` (the global step), `fetches`
                                  ('train' and the losses to show) and `summary`; returns the stage
    and, where it needs them, overrides the rest below."""
    name = kind = None

    def __init__(self, args):
        self.args = args

    def data(self, replicas):
        """The sidecar of --tfrecord_path, checked for this stage and the `replicas` (the global
        batch is split evenly among them), before any work."""
        args = self.args
        meta = check_records(args.tfrecord_path, self.kind, args.scale, args.patch_size)
        if args.batch_size % replicas:
            raise TrainingError('--batch_size %d does not split evenly over %d replicas'
                                % (args.batch_size, replicas))
        return meta

    def degrade(self):
        """A function (image, index) -> image for each example's image (records.dataset), or None."""
        return None

    def batches(self, cluster, ds):
        """(lr, hr, initializer or None) of the dataset `ds` on `cluster`."""
        return cluster.batches(ds)

    def describe(self, meta):
        """What the run trains on, for its first line."""
        return '%s x%d on %s (%d patches, HR %dx%d, batch %d)' % (
            self.name, self.args.scale, self.args.tfrecord_path, meta['count'], meta['label_shape'][0],
            meta['label_shape'][1], self.args.batch_size)

    def start(self, sess):
        """A new trial (nothing to resume): the first weights, e.g. from another stage's checkpoint."""

    def after_step(self, sess, writer, step):
        """After each step `step` (the NMD: validation and curriculum)."""


def train_stage(stage, args):
    """Train `stage` as `args` say: check the data, build the graph on `stage.cluster()` (one
    device, or the replicas of a tf.distribute strategy), resume the trial's latest (or --step)
    checkpoint or start it (`stage.start`), then run the step loop (train_loop) with its
    checkpoints and summaries. Under multiworker, the chief alone writes checkpoints and
    summaries in the trial's folder. Returns the last step and losses."""
    folder = trial_dir(stage.name, args)
    tf.reset_default_graph()
    tf.set_random_seed(args.seed)
    cluster = stage.cluster()
    meta = stage.data(cluster.replicas)
    ds, _ = records.dataset(args.tfrecord_path, args.batch_size, seed=args.seed, meta=meta, degrade=stage.degrade())
    if cluster.is_chief:
        trial_folder(folder)
    with cluster.scope():
        lr, hr, data_init = stage.batches(cluster, ds)
        stage.build(lr, hr, cluster.strategy)
        saver = tf.train.Saver(max_to_keep=None)  # save_checkpoint prunes (--keep_checkpoints)
        same_step = cluster.same_step_everywhere(stage.step)
    print('device: %s; %s; checkpoints %sin %s' % (cluster.description, stage.describe(meta),
                                                   '' if cluster.is_chief else 'by the chief ', folder))
    out_dir = folder if cluster.is_chief else tempfile.mkdtemp(prefix='natsr-worker-')
    try:
        with cluster.session() as sess:
            sess.run([tf.global_variables_initializer()] + ([data_init] if data_init is not None else []))
            prefix = resume(sess, saver, folder, args.step, write=cluster.is_chief)
            if prefix:
                print('resumed from %s' % prefix)
            else:
                stage.start(sess)
            if same_step is not None and not sess.run(same_step):
                raise TrainingError('the workers resumed from different steps: every worker must see the '
                                    "chief's trial folder %s (a shared file system)" % folder)
            # every worker runs the same steps (the summaries' cross-worker means included)
            writer = Events(out_dir, sess.graph if not prefix and cluster.is_chief else None)
            return train_loop(sess, stage.fetches, stage.step, saver, out_dir, args.max_steps,
                              args.checkpoint_interval, stage.summary, writer, args.summary_interval,
                              after_step=lambda step: stage.after_step(sess, writer, step),
                              keep=args.keep_checkpoints, data=args.tfrecord_path)
    finally:
        if out_dir != folder:  # a non-chief worker's checkpoints and summaries: thrown away (TF's advice)
            shutil.rmtree(out_dir, ignore_errors=True)
