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

if __package__ in (None, ''):  # run as a script: the project root first on sys.path (docs/layout.md)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from natsr.process import tflog
from natsr.training import entry  # no TensorFlow: it runs before TensorFlow starts


def main(argv=None):
    argv, status = entry.start(argv, ('--tfrecord_path', '--val_tfrecord_path'))
    if status is not None:
        return status
    from natsr.training import loop
    from Train_NMD import config, train
    parser = tflog.add_flag(loop.config_parser(config, __doc__.split('\n')[0]))
    parser.epilog, parser.formatter_class = __doc__.split('\n', 2)[2], argparse.RawDescriptionHelpFormatter
    return loop.run_main(parser, train, argv, 'Model/NMD')


if __name__ == '__main__':
    sys.exit(main())
