"""Train the Natural Manifold Discriminator, e.g.

    cd Train_NMD && python main.py --gpu 0 --trial 0 --tfrecord_path ../train_NMD_X4.tfrecord \
        --val_tfrecord_path ../train_NMD_X4_val.tfrecord
    python Train_NMD/main.py --export Model/NMD        # ship the CLASSIFIER weights of the trial

Every constant of Train_NMD/config.py is a flag (--batch_size, --noise_sigma, --acc_window, ...).
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import loop  # noqa: E402

loop.select_gpu(sys.argv)
from Train_NMD import config  # noqa: E402
from Train_NMD import train  # noqa: E402


def main(argv=None):
    return loop.run_main(loop.config_parser(config, __doc__.split('\n')[0]), train, argv, 'Model/NMD')


if __name__ == '__main__':
    sys.exit(main())
