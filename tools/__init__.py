"""The tools' commands (convert_weights.py, prepare_pool.py, torch_train.py) and the PyTorch mirror
(torch_mirror/), imported from the project root as `tools.*`."""
