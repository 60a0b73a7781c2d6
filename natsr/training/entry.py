"""What a trainer's command (main.py, Train_NMD/main.py) does before TensorFlow starts: a damaged
TFRecord named on the command line is one line at once, TensorFlow's log output and graph mode are
set, and the command line's --gpu picks the devices. No TensorFlow is imported here."""
import sys

from generate_Dataset import records  # no TensorFlow
from natsr import device
from natsr.process import exits, tflog


def start(argv, record_flags):
    """(the command line as a list, None), or (..., exit status 2) after one line when a TFRecord of
    `record_flags` is damaged; `argv` None: sys.argv[1:]."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    problem = records.problem_in_command(argv, record_flags)
    if problem:
        return argv, exits.error(problem)
    tflog.init('--verbose' in argv)
    device.select_gpu(device.gpu_value(argv))
    return argv, None
