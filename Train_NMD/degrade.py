"""The two unnatural classes of the NMD: DCT-noisy and blurry images.

TensorFlow is imported by inject_dct alone, so that tools/torch_mirror (PyTorch, on a machine
without TensorFlow) shares the DCT basis, the coefficient mask and `blur` with the TF trainer."""
import numpy as np


def dct_matrix(n=8):
    """Orthonormal DCT-II matrix D: coefficients = D @ block @ D.T."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    d[0] /= np.sqrt(2.0)
    return d


def high_frequency_mask(n=8):
    """1 on the last row and the last column of an n x n block of coefficients."""
    m = np.zeros((n, n), np.float32)
    m[-1, :] = 1
    m[:, -1] = 1
    return m


def inject_dct(x, sigma, seed=None):
    """Add N(0, sigma^2) noise to the row-7 and column-7 DCT coefficients of every 8x8
    block of every channel of `x` [n, h, w, c] (h, w multiples of 8); one draw per
    coefficient. Vectorised: blocks are a reshape, the 2-D DCT two matrix products."""
    import tensorflow.compat.v1 as tf
    n, h, w, c = [tf.shape(x)[i] for i in range(4)]
    d = tf.constant(dct_matrix(), tf.float32)
    blocks = tf.reshape(x, [n, h // 8, 8, w // 8, 8, c])
    coef = tf.einsum('ij,nbjwkc,lk->nbiwlc', d, blocks, d)
    mask = tf.constant(high_frequency_mask()[None, None, :, None, :, None])
    coef += tf.random.normal(tf.shape(coef), stddev=1.0, seed=seed) * sigma * mask
    out = tf.einsum('ji,nbjwkc,kl->nbiwlc', d, coef, d)
    return tf.reshape(out, tf.shape(x))


def blur(hr, ilr, alpha):
    """The blurry class: alpha * HR + (1 - alpha) * ILR (TF or PyTorch tensors, numpy arrays)."""
    return alpha * hr + (1.0 - alpha) * ilr
