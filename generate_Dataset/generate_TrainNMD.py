"""Build the NMD training TFRecord (HR patches and their aligned ILR patches) and its validation
TFRecord from whole images held out of training.

    python generate_Dataset/generate_TrainNMD.py --labelpath HR [HR2 ...] [--datapath LR ...]
        [--tfrecord train_NMD_X4.tfrecord] [--val_fraction 0.05 | --val_images N]
        [--val_tfrecord train_NMD_X4_val.tfrecord] [--scale 4] [--patch 192] [--seed 0]

Also `python -m generate_Dataset.generate_TrainNMD ...`; `--help` lists every option.
The implementation, shared with generate_NatSR.py, is in build.py and patches.py.
"""
import os
import sys

if __package__ in (None, ''):  # run as a script: the project root first on sys.path (docs/layout.md)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from generate_Dataset import build
from natsr.process import tflog


def main(argv=None):
    tflog.init(graph=False)
    return build.main('NMD', argv)


if __name__ == '__main__':
    sys.exit(main())
