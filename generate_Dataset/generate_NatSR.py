"""Build the NatSR / FRSR training TFRecord: HR patches and their aligned LR patches.

    python generate_Dataset/generate_NatSR.py --labelpath HR [HR2 ...] [--datapath LR ...]
        [--tfrecord train_SR_X4.tfrecord] [--scale 4] [--patch 192] [--stride 120] [--seed 0]

Also `python -m generate_Dataset.generate_NatSR ...`; `--help` lists every option.
The implementation, shared with generate_TrainNMD.py, is in build.py and patches.py.
"""
import os
import sys

if __package__ in (None, ''):  # run as a script: the project root first on sys.path (docs/layout.md)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from generate_Dataset import build
from natsr.process import tflog


def main(argv=None):
    tflog.init(graph=False)
    return build.main('NatSR', argv)


if __name__ == '__main__':
    sys.exit(main())
