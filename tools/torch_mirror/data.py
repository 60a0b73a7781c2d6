"""Training patches on the device as generate_Dataset would write them, and the NMD's DCT noise.

Data: a folder made by tools/prepare_pool.py (modcropped HR images + corners.json of the kept
patches); LR (ILR) = MATLAB-bicubic imresize, computed here (generate_Dataset/patches.degrade)."""
import json
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

import utils
from generate_Dataset import patches
from Train_NMD import degrade


def _cut(job):
    """The (HR, LR or ILR) patch pairs of one image: at `corners`, or where patches.select keeps them."""
    path, kind, scale, patch, stride, corners = job
    hr = utils.modcrop(utils.read_rgb8(path), scale)
    if corners is None:
        corners = patches.select(hr, patch, stride, scale)[0]     # none when the image is too small
    image = patches.degrade(hr, scale, kind) if corners else None
    return [patches.crop(hr, image, y, x, patch) for y, x in corners]


class Patches(object):
    """Training patches on the device as generate_Dataset would write them, drawn in shuffled
    epochs, each with one of the first `augment` dihedral transforms (mode: rot90 mode // 2 times,
    then flipud if odd).

    kind 'NatSR': (LR, HR) at the corners of corners.json; kind 'NMD': (ILR, HR) at the corners
    patches.select keeps at (`patch`, `stride`), of the images `keep(name)` accepts."""

    def __init__(self, folder, seed, kind='NatSR', patch=None, stride=None, keep=None, augment=8, workers=8):
        meta = json.load(open(os.path.join(folder, 'corners.json')))
        self.scale, self.augment = meta['scale'], augment
        files = {os.path.splitext(f)[0]: os.path.join(folder, 'hr', f)
                 for f in sorted(os.listdir(os.path.join(folder, 'hr')))}
        if kind == 'NatSR':
            missing = sorted(set(meta['corners']) - set(files))
            if missing:
                raise SystemExit('%s: corners.json names images missing from hr/: %s' % (folder, missing[:3]))
            jobs = [(files[n], kind, self.scale, meta['patch'], None, meta['corners'][n]) for n in sorted(meta['corners'])]
        else:
            jobs = [(f, kind, self.scale, patch, stride, None) for n, f in files.items() if keep is None or keep(n)]
        with ProcessPoolExecutor(workers) as ex:
            pairs = [pair for image in ex.map(_cut, jobs) for pair in image]
        if not pairs:
            raise SystemExit('%s: no %s patches' % (folder, kind))
        self.hr = torch.from_numpy(np.stack([h for h, _ in pairs]))     # uint8 NHWC
        self.lr = torch.from_numpy(np.stack([i for _, i in pairs]))     # LR (NatSR) or ILR (NMD)
        self.gen = torch.Generator(device='cpu').manual_seed(seed)
        self.order, self.pos = None, 0

    def to(self, device):
        self.hr, self.lr = self.hr.to(device), self.lr.to(device)
        return self

    def __len__(self):
        return self.augment * len(self.hr)

    def batch(self, n):
        """(lr, hr) float NCHW (channels-last memory) in [0, 1]."""
        if self.order is None or self.pos + n > len(self.order):
            self.order, self.pos = torch.randperm(len(self), generator=self.gen), 0
        pick = self.order[self.pos:self.pos + n]
        self.pos += n
        idx, modes = (pick // self.augment).to(self.hr.device), pick % self.augment
        lr, hr = self.lr[idx], self.hr[idx]
        lr_out, hr_out = torch.empty_like(lr), torch.empty_like(hr)
        for m in range(self.augment):
            sel = (modes == m).nonzero().flatten().to(self.hr.device)
            if len(sel):
                lr_out[sel], hr_out[sel] = self.dihedral(lr[sel], m), self.dihedral(hr[sel], m)
        return as_float(lr_out), as_float(hr_out)

    @staticmethod
    def dihedral(x, mode):
        x = torch.rot90(x, mode // 2, dims=(1, 2))
        return torch.flip(x, dims=(1,)) if mode % 2 else x


def as_float(t):
    """uint8 NHWC -> float NCHW in [0, 1] (NHWC memory: channels-last)."""
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def inject_dct(x, sigma):
    """Train_NMD.degrade.inject_dct on NCHW: N(0, sigma^2) on the row-7 and column-7 DCT
    coefficients of every 8x8 block of every channel."""
    n, c, h, w = x.shape
    d = torch.as_tensor(degrade.dct_matrix(), dtype=x.dtype, device=x.device)
    mask = torch.as_tensor(degrade.high_frequency_mask(), dtype=x.dtype, device=x.device)[:, None, :]
    coef = torch.einsum('ij,ncbjwk,lk->ncbiwl', d, x.reshape(n, c, h // 8, 8, w // 8, 8), d)
    coef = coef + torch.randn_like(coef) * sigma * mask
    return torch.einsum('ji,ncbjwk,kl->ncbiwl', d, coef, d).reshape(n, c, h, w)
