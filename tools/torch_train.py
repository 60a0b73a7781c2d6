"""NMD, FRSR and NatSR training in PyTorch, for a GPU machine that has PyTorch but no TensorFlow.

The project trains with TensorFlow (main.py). This is the same training written in PyTorch for one
situation: a lent GPU machine whose image holds PyTorch and cannot install TensorFlow (no package
registry, and the TensorFlow GPU wheel is far larger than what can be carried there). The code is
the package tools/torch_mirror/ (networks, losses, data, train); this is its command line.

Data: a folder made by tools/prepare_pool.py (modcropped HR images + corners.json of the kept
patches). Weights: TF-named .npz parts, for tools/convert_weights.py.

    python tools/torch_train.py --stage FRSR --data .gpu_data --seconds 300 --out out/FRSR_x4
    python tools/torch_train.py --stage NatSR --data .gpu_data --init out/FRSR_x4 \\
        --nmd out/NMD --seconds 180 --out out/NatSR_x4
    python tools/torch_train.py --stage NMD --data .gpu_data --val_list held_out.txt --seconds 95 --out out/NMD
"""
import os
import sys

if __package__ in (None, ''):  # run as a script: the project root first on sys.path (docs/layout.md)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tools.torch_mirror.train import main

if __name__ == '__main__':
    main()
