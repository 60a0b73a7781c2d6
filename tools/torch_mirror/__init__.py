"""The PyTorch mirror of NatSR: the networks, losses, data and trainers of the TensorFlow port,
for a GPU machine that has PyTorch but cannot install TensorFlow (how the shipped models were
trained), and the PyTorch peer of bench/speed.py.

    networks.py  FRACTAL, NMD, the spectral-normalised Discriminator; TF1 initialisers; weights
                 to and from the TensorFlow names
    losses.py    L1, naturalness, RaGAN
    data.py      patches as generate_Dataset cuts them; the NMD's noisy and blurry classes
    train.py     the three stages (FRSR, NatSR, NMD) and the command line of tools/torch_train.py

Only torch and numpy (and the project's numpy modules: utils, imresize, generate_Dataset.patches,
Train_NMD's config, curriculum and degrade): no module here imports TensorFlow. Import it from the project root
(`from tools.torch_mirror import networks`), as tools/torch_train.py and bench/speed.py do.
"""
