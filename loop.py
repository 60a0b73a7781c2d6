"""What the three training stages (NMD, FRSR, NatSR) share: flags from a config module, and the
step loop with its progress bar, summaries, interval checkpoints (checkpoints.save_checkpoint),
Ctrl-C / SIGTERM checkpoint and NaN and damaged-data guards; the command line's exit statuses."""
import argparse
import math
import os
import signal
import sys

import tensorflow.compat.v1 as tf
from tqdm import tqdm

from checkpoints import CheckpointError, save_checkpoint
from device import TRAIN_PRECISIONS, PrecisionError
from generate_Dataset import records
from utils import error_line
# The trainers' names of today, until the merge of issue 14 renames their calls to checkpoints.* /
# device.* (train.py and Train_NMD/train.py are being rewritten beside this change): drop then.
from checkpoints import export, resume, restore_matching, restore_scope, trial_folder  # noqa: F401,E402
from device import device_name, session_config  # noqa: F401,E402


class TrainingError(Exception):
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


def load_sidecar(tfrecord, patch_size=None):
    """The sidecar of the TFRecord `tfrecord` (one-line errors), checked against --patch_size
    `patch_size` (None or 0: not given; the patch size is the TFRecord's)."""
    try:
        meta = records.load_sidecar(tfrecord)
    except ValueError as e:
        raise TrainingError(str(e))
    side = meta['label_shape'][0]
    if patch_size and side != patch_size:
        raise TrainingError("%s: holds %d-pixel HR patches, --patch_size is %d (leave --patch_size out: the "
                            "TFRecord's sidecar sets it)" % (tfrecord, side, patch_size))
    return meta


class _Stop(object):
    """Turns SIGTERM into KeyboardInterrupt while training, so both end with a checkpoint."""

    def __enter__(self):
        self.old = signal.signal(signal.SIGTERM, self._raise)
        return self

    def _raise(self, signum, frame):
        raise KeyboardInterrupt('SIGTERM')

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self.old)
        return False


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
    with _Stop():
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
                losses = {k: float(v) for k, v in out.items() if k not in ('train', 'summary', 'step')}
                if with_summary:
                    writer.add_summary(out['summary'], current)
                if after_step is not None:
                    after_step(current)
                bar.update(current - bar.n)
                bar.set_postfix({k: '%.4g' % v for k, v in losses.items()}, refresh=False)
                if checkpoint_interval and current % checkpoint_interval == 0:
                    save()
        except KeyboardInterrupt:
            bar.close()
            save()
            print('interrupted at step %d: %s' % (current, where()), file=sys.stderr)
            raise
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
    """Run `fn()` and return exit status 0; a TrainingError, CheckpointError, PrecisionError or a
    file system error (a missing file, a full disk) ends with one line on stderr and status 2,
    Ctrl-C / SIGTERM (after its checkpoint) with 130."""
    try:
        fn()
        return 0
    except (TrainingError, CheckpointError, PrecisionError, OSError) as e:
        print('error: %s' % e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
