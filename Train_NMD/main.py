"""Train the Natural Manifold Discriminator (NMD): natural vs noisy / blurry patches, with the curriculum.

Examples:

    cd Train_NMD && python main.py --gpu 0 --trial 0 --tfrecord_path ../train_NMD_X4.tfrecord \\
        --val_tfrecord_path ../train_NMD_X4_val.tfrecord
    python Train_NMD/main.py --export Model/NMD        # ship the CLASSIFIER weights of the trial

Every constant of Train_NMD/config.py is a flag (--batch_size, --noise_sigma, --acc_window, ...).
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
import exits  # noqa: E402
import tflog  # noqa: E402
from generate_Dataset import records  # noqa: E402  (no TensorFlow)

if __name__ == '__main__':  # a damaged TFRecord: one line now, not after TensorFlow's start-up
    problem = records.problem_in_command(sys.argv[1:], ('--tfrecord_path', '--val_tfrecord_path'))
    if problem:
        sys.exit(exits.error(problem))
tflog.init('--verbose' in sys.argv[1:])  # before TensorFlow starts: log output, graph mode
import device  # noqa: E402

device.select_gpu(device.gpu_value(sys.argv))
import loop  # noqa: E402
from Train_NMD import config  # noqa: E402
from Train_NMD import train  # noqa: E402


def main(argv=None):
    parser = tflog.add_flag(loop.config_parser(config, __doc__.split('\n')[0]))
    parser.epilog, parser.formatter_class = __doc__.split('\n', 2)[2], argparse.RawDescriptionHelpFormatter
    return loop.run_main(parser, train, argv, 'Model/NMD')


if __name__ == '__main__':
    sys.exit(main())
