"""The NatSR library: what test.py, main.py, export.py, app.py, the generators, the trainers and the
tools share (docs/layout.md: a line per module and where a change goes).

    natsr/checkpoints.py, device.py, imresize.py   shared by every part
    natsr/inference/    running a network: the generator's graph, tiling, memory; test.py's job
    natsr/training/     the trainers' loop, trials (resume, saves, export), tf.distribute
    natsr/evaluation/   the metrics (PSNR, SSIM, NIQE, LPIPS, the look measures)
    natsr/deploy/       exports (SavedModel, ONNX, TFLite, OpenVINO) and the engines that run them
    natsr/process/      exit statuses and one-line errors, TensorFlow's set-up

The networks (model.py, ops.py), the paper's constants (config.py), the trainers' stages (train.py)
and image input/output (utils.py) stay at the project root, as in the original release.
"""
