"""Train FRSR (L1 loss) or fine-tune NatSR (L1 + naturalness loss from the NMD + RaGAN).

Examples:

    python main.py --model FRSR --gpu 0 --trial 0 --tfrecord_path train_SR_X4.tfrecord
    python main.py --model NatSR --frsr_checkpoint Model/FRSR --nmd_checkpoint Model/NMD
    python main.py --model FRSR --export Model/FRSR     # ship the GEN weights of the trial
    python main.py --model NatSR --step 3000 --export Model/NatSR --export_raw   # not their moving average
    python main.py --model FRSR --average_steps 200,250,300 --export Model/FRSR  # checkpoint averaging
    python main.py --model FRSR --strategy mirrored     # all GPUs of this machine (--num_gpus N)
    TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}' \\
        python main.py --model FRSR --strategy multiworker  # one such command on each machine

Every constant of config.py is a flag (--batch_size, --learning_rate, --scale, ...); --batch_size
is the global batch, split evenly over the replicas of --strategy (see distribute.py).
"""
import argparse
import sys

from natsr.process import tflog
from natsr.training import entry  # no TensorFlow: it runs before TensorFlow starts


def steps_list(text):
    """--average_steps: comma-separated checkpoint steps, at least two."""
    try:
        steps = sorted({int(s) for s in text.split(',') if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError('not comma-separated steps: %r' % text)
    if len(steps) < 2:
        raise argparse.ArgumentTypeError('give at least two steps to average, not %r' % text)
    return steps


def main(argv=None):
    argv, status = entry.start(argv, ('--tfrecord_path',))
    if status is not None:
        return status
    import config
    import train
    from natsr.training import distribute, loop
    parser = tflog.add_flag(distribute.add_flags(loop.config_parser(config, __doc__.split('\n')[0])))
    parser.add_argument('--export_raw', action='store_true',
                        help='with --export: ship the GEN weights themselves, not their moving average '
                             '(which --export ships where the run kept one, --ema_decay)')
    parser.add_argument('--average_steps', type=steps_list, default=None, metavar='S1,S2,...',
                        help='with --export: ship the mean of the GEN weights of the checkpoints of these steps '
                             '(checkpoint averaging)')
    parser.epilog, parser.formatter_class = __doc__.split('\n', 2)[2], argparse.RawDescriptionHelpFormatter
    return loop.run_main(parser, train, argv, 'Model/FRSR')


if __name__ == '__main__':
    sys.exit(main())
