"""The losses of train.py and Train_NMD/train.py in PyTorch (float32 logits in, scalar out)."""
import torch
import torch.nn.functional as F


def l1(sr, hr):
    """The FRSR loss: mean absolute error."""
    return (sr.float() - hr).abs().mean()


def bce(logits, label):
    """Sigmoid cross-entropy of every logit against one label (0 or 1)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(label)))


def ragan(c_real, c_fake):
    """Relativistic average GAN: (discriminator loss, generator loss) from the critic's logits."""
    d_real, d_fake = c_real - c_fake.mean(), c_fake - c_real.mean()
    return bce(d_real, 1) + bce(d_fake, 0), bce(d_fake, 1) + bce(d_real, 0)


def naturalness(nmd_logit):
    """-log(NMD(SR)): the frozen NMD's pull towards the natural manifold."""
    return -torch.log(torch.sigmoid(nmd_logit) + 1e-10).mean()
