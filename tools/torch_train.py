"""NMD, FRSR and NatSR training in PyTorch, for a GPU machine that has PyTorch but no TensorFlow.

The project trains with TensorFlow (main.py). This script is the same training written in
PyTorch for one situation: a lent GPU machine whose image holds PyTorch and cannot install
TensorFlow (no package registry, and the TensorFlow GPU wheel is far larger than what can be
carried there). It mirrors train.py and Train_NMD/train.py: the networks of model.py (bench/torch_frsr.py for FRACTAL,
NMD and the spectral-normalised Discriminator here), their TF1 initialisers, the losses
(FRSR: L1; NatSR: L1 + 1e-3 * naturalness + 1e-3 * RaGAN, one D step then one G step per batch,
DIS with one power iteration per forward pass, TF 'SAME' padding), Adam (beta1 0.9) at 2e-4,
and the data rule of generate_Dataset (kept grid patches, 8 dihedral transforms, shuffled); for
the NMD, the batch composition, DCT noise, blur and curriculum of Train_NMD (shared modules).
Weights are written with the TensorFlow names (`GEN/conv1/conv2d/kernel`, HWIO) as .npz parts
under 16 MB each; tools/convert_weights.py turns them into the shipping TF checkpoint.

Data: a folder made by tools/prepare_pool.py (modcropped HR images + corners.json of the kept
patches); LR (ILR) = MATLAB-bicubic imresize, computed here (generate_Dataset/patches.degrade).

    python tools/torch_train.py --stage FRSR --data .gpu_data --seconds 300 --out out/FRSR_x4
    python tools/torch_train.py --stage NatSR --data .gpu_data --init out/FRSR_x4 \\
        --nmd out/NMD --seconds 180 --out out/NatSR_x4
    python tools/torch_train.py --stage NMD --data .gpu_data --val_list held_out.txt --seconds 95 --out out/NMD
"""
import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'bench'), os.path.join(ROOT, 'tools')]
import torch_frsr  # noqa: E402
from convert_weights import load_parts, save_parts  # noqa: E402
import utils  # noqa: E402
from generate_Dataset import patches  # noqa: E402
from Train_NMD import config as nmd_config, degrade  # noqa: E402
from Train_NMD.curriculum import curriculum_update  # noqa: E402

# ----------------------------------------------------------------------------- TF1 initialisers

def he_(w):
    """ops.he_init (TF1 contrib variance_scaling_initializer()) on an OIHW kernel: a normal of
    std sqrt(1.3 * 2 / fan_in) truncated at 2 std."""
    fan_in = w.shape[1] * w.shape[2] * w.shape[3]
    std = math.sqrt(1.3 * 2.0 / fan_in)
    nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std)


def glorot_(w):
    """glorot_uniform_initializer on an OIHW kernel (fans include the receptive field)."""
    rf = w.shape[2] * w.shape[3]
    limit = math.sqrt(6.0 / (w.shape[1] * rf + w.shape[0] * rf))
    nn.init.uniform_(w, -limit, limit)


def init_fractal(net):
    relu = {id(c) for blk in net.blocks for c in blk.convs}
    for _, mod, _ in torch_frsr._tf_modules(net):
        (he_ if id(mod) in relu else glorot_)(mod.weight.data)
        nn.init.zeros_(mod.bias)
    return net


# ----------------------------------------------------------------------------- NMD and DIS

def same_pad(x, k, stride):
    """TensorFlow 'SAME' padding (the extra pixel goes right / bottom)."""
    pads = []
    for size in (x.shape[3], x.shape[2]):
        total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class NMD(nn.Module):
    """model.NMD: VGG-style, 2x2 max-pools, logit = spatial mean of conv5_1."""
    NAMES = ['conv%d_%d' % (s, i) for s in range(1, 5) for i in (1, 2)] + ['conv5_1']

    def __init__(self):
        super().__init__()
        chans, convs, cin = (64, 64, 128, 128, 256, 256, 512, 512, 1), [], 3
        for c in chans:
            convs.append(nn.Conv2d(cin, c, 3, padding=1))
            cin = c
        self.convs = nn.ModuleList(convs)

    def forward(self, x):
        for i, c in enumerate(self.convs[:-1]):
            x = F.relu(c(x))
            if i % 2:
                x = F.max_pool2d(x, 2, 2)
        return self.convs[-1](x).mean(dim=(1, 2, 3))

    def tf_weights(self, scope='CLASSIFIER'):
        out = {}
        for name, c in zip(self.NAMES, self.convs):
            out['%s/%s/conv2d/kernel' % (scope, name)] = c.weight.detach().float().cpu().numpy().transpose(2, 3, 1, 0).copy()
            out['%s/%s/conv2d/bias' % (scope, name)] = c.bias.detach().float().cpu().numpy().copy()
        return out

    def load_tf(self, weights, scope='CLASSIFIER'):
        with torch.no_grad():
            for name, c in zip(self.NAMES, self.convs):
                c.weight.copy_(torch.from_numpy(weights['%s/%s/conv2d/kernel' % (scope, name)].transpose(3, 2, 0, 1)))
                c.bias.copy_(torch.from_numpy(weights['%s/%s/conv2d/bias' % (scope, name)]))
        return self


def l2_normalize(v, eps=1e-12):
    """ops.l2_normalize: v / (||v|| + eps) over the whole tensor."""
    return v / (v.square().sum().sqrt() + eps)


class SNConv(nn.Module):
    """ops.conv2d_sn: kernel / sigma(kernel), sigma by one power iteration per forward pass,
    `u` [1, out] updated in place. As in ops.spectral_norm (and the original), the gradient
    flows through the power iteration; the stored `u` alone is a constant. The power iteration
    runs in fp32 outside autocast, as in the TF graph."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        he_(self.weight.data)
        u = torch.empty(1, cout)
        nn.init.trunc_normal_(u, 0.0, 1.0, -2.0, 2.0)
        self.register_buffer('u', u)

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):
            w = self.weight.float().reshape(self.weight.shape[0], -1)  # [out, k*k*in]: TF's [k*k*in, out]^T
            v = l2_normalize(self.u @ w)                               # TF: v_hat = u W^T (W = w^T)
            u = l2_normalize(v @ w.t())                                # TF: u_hat = v_hat W
            sigma = (v @ w.t() @ u.t()).squeeze()
            self.u = u.detach()                                        # not in place: u @ w saved the old u
            w_sn = self.weight / sigma
        return F.conv2d(same_pad(x, 3, self.stride), w_sn, self.bias, self.stride)


class Discriminator(nn.Module):
    """model.Discriminator: 10 SN convs with LeakyReLU 0.2, conv6_1 to 1 channel, spatial mean."""

    def __init__(self):
        super().__init__()
        convs, cin = [], 3
        for c in (64, 128, 256, 512, 1024):
            convs += [SNConv(cin, c, 1), SNConv(c, c, 2)]
            cin = c
        self.convs = nn.ModuleList(convs)
        self.out = SNConv(cin, 1, 1)

    def forward(self, x):
        for c in self.convs:
            x = F.leaky_relu(c(x), 0.2)
        return self.out(x).mean(dim=(1, 2, 3))


# ----------------------------------------------------------------------------- data

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


# ----------------------------------------------------------------------------- training

def bce(logits, label):
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(label)))


def ragan_losses(c_real, c_fake):
    d_real, d_fake = c_real - c_fake.mean(), c_fake - c_real.mean()
    return bce(d_real, 1) + bce(d_fake, 0), bce(d_fake, 1) + bce(d_real, 0)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--stage', choices=('FRSR', 'NatSR', 'NMD'), required=True)
    p.add_argument('--data', required=True, help='folder from tools/prepare_pool.py')
    p.add_argument('--out', required=True, help='weights prefix (TF names): OUT.part*.npz, OUT.json')
    p.add_argument('--init', help='GEN weights prefix to start from (NatSR: the FRSR)')
    p.add_argument('--nmd', help='CLASSIFIER weights prefix (NatSR)')
    p.add_argument('--seconds', type=float, required=True, help='wall-clock training budget')
    p.add_argument('--max_steps', type=int, default=10 ** 9)
    p.add_argument('--batch_size', type=int, default=32)
    p.add_argument('--learning_rate', type=float, help='default 2e-4 (NMD: 1e-4)')
    p.add_argument('--beta1', type=float, default=0.9)
    p.add_argument('--nat_weight', type=float, default=1e-3)
    p.add_argument('--gan_weight', type=float, default=1e-3)
    p.add_argument('--val_list', help='NMD: file of image names (one per line) held out for validation')
    p.add_argument('--nmd_patch', type=int, default=96, help='NMD: patch side (a multiple of 16)')
    p.add_argument('--nmd_stride', type=int, default=48)
    p.add_argument('--val_interval', type=int, default=nmd_config.VAL_INTERVAL)
    p.add_argument('--acc_window', type=int, default=nmd_config.ACC_WINDOW)
    p.add_argument('--precision', choices=('fp32', 'bf16'), default='bf16',
                   help='bf16: autocast compute, fp32 weights, losses and optimizer (default)')
    p.add_argument('--save_every', type=float, default=60.0, help='seconds between weight saves')
    p.add_argument('--log_every', type=int, default=100)
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    if args.learning_rate is None:
        args.learning_rate = nmd_config.LEARNING_RATE if args.stage == 'NMD' else 2e-4
    for name in ('noise_sigma', 'alpha', 'sigma_decay', 'alpha_step', 'alpha_max', 'acc_threshold'):
        setattr(args, name, getattr(nmd_config, name.upper()))
    return args


def adam(params, args):
    return torch.optim.Adam(params, args.learning_rate, betas=(args.beta1, 0.999), eps=1e-8)


def generator_stage(args, data, dev, amp):
    """FRSR (L1) or NatSR (D step, then G step with L1 + naturalness + RaGAN): (step, weights, state)."""
    gen = torch_frsr.Fractal(data.scale)
    if args.init:
        torch_frsr.load_tf_weights(gen, load_parts(args.init))
    else:
        init_fractal(gen)
    gen = gen.to(dev, memory_format=torch.channels_last).train()
    opt_g = adam(gen.parameters(), args)
    natsr = args.stage == 'NatSR'
    if natsr:
        if not (args.init and args.nmd):
            raise SystemExit('--stage NatSR needs --init (FRSR weights) and --nmd (NMD weights)')
        nmd = NMD().load_tf(load_parts(args.nmd)).to(dev, memory_format=torch.channels_last).eval()
        nmd.requires_grad_(False)                                   # frozen: in no optimizer
        dis = Discriminator().to(dev, memory_format=torch.channels_last).train()
        opt_d = adam(dis.parameters(), args)

    def step():
        lr, hr = data.batch(args.batch_size)
        with amp:
            sr = gen(lr)
        l1 = (sr.float() - hr).abs().mean()
        losses = {'l1': l1}
        loss = l1
        if natsr:
            with amp:                                               # D step: SR is a constant
                c_real, c_fake = dis(hr), dis(sr.detach())
            loss_d, _ = ragan_losses(c_real.float(), c_fake.float())
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            with amp:                                               # G step, updated DIS, frozen NMD
                c_real, c_fake, nmd_logit = dis(hr), dis(sr), nmd(sr)
            _, loss_gan = ragan_losses(c_real.float(), c_fake.float())
            loss_nat = -torch.log(torch.sigmoid(nmd_logit.float()) + 1e-10).mean()
            loss = l1 + args.nat_weight * loss_nat + args.gan_weight * loss_gan
            losses.update(d=loss_d, g_gan=loss_gan, nat=loss_nat, nmd=torch.sigmoid(nmd_logit.float()).mean())
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        return losses
    return step, lambda: torch_frsr.tf_weights(gen), lambda: {}, lambda n: None


def nmd_stage(args, data, val, dev, amp):
    """The NMD with the sigma / alpha curriculum (Train_NMD/train.py): batch = [noisy quarter |
    blurry quarter | clean half], labels 0, 0, 1; validation every val_interval steps."""
    if args.batch_size % 4:
        raise SystemExit('--batch_size must be a multiple of 4 (noisy, blurry, clean, clean)')
    nmd = NMD()
    for c in nmd.convs[:-1]:
        he_(c.weight.data)
    glorot_(nmd.convs[-1].weight.data)
    for c in nmd.convs:
        nn.init.zeros_(c.bias)
    nmd = nmd.to(dev, memory_format=torch.channels_last).train()
    opt = adam(nmd.parameters(), args)
    q = args.batch_size // 4
    labels = torch.tensor([0.0] * (2 * q) + [1.0] * (args.batch_size - 2 * q), device=dev)
    st = {'sigma': args.noise_sigma, 'alpha': args.alpha, 'noise_hist': [], 'blur_hist': [], 'validation': []}

    def step():
        ilr, hr = data.batch(args.batch_size)
        x = torch.cat([inject_dct(hr[:q], st['sigma']), degrade.blur(hr[q:2 * q], ilr[q:2 * q], st['alpha']),
                       hr[2 * q:]]).contiguous(memory_format=torch.channels_last)
        with amp:
            logit = nmd(x)
        loss = F.binary_cross_entropy_with_logits(logit.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {'loss': loss, 'acc': 100 * ((logit.float() >= 0) == (labels > 0.5)).float().mean()}

    def validate(n):
        if n % args.val_interval:
            return
        ilr, hr = val
        correct = torch.zeros(3, device=dev)
        with torch.no_grad(), amp:
            for i in range(0, len(hr), 64):
                h, l = hr[i:i + 64], ilr[i:i + 64]
                for k, x in enumerate((inject_dct(h, st['sigma']), degrade.blur(h, l, st['alpha']), h)):
                    nat = nmd(x.contiguous(memory_format=torch.channels_last)).float() >= 0
                    correct[k] += nat.sum() if k == 2 else (~nat).sum()
        c = correct.tolist()
        acc_noise, acc_blur = 100 * (c[0] + c[2]) / (2 * len(hr)), 100 * (c[1] + c[2]) / (2 * len(hr))
        old = (st['sigma'], st['alpha'])
        st['sigma'], st['alpha'], st['noise_hist'], st['blur_hist'] = curriculum_update(
            st['sigma'], st['alpha'], st['noise_hist'], st['blur_hist'], acc_noise, acc_blur, args)
        st['validation'].append({'step': n, 'noise': acc_noise, 'blur': acc_blur, 'sigma': st['sigma'],
                                 'alpha': st['alpha']})
        if (st['sigma'], st['alpha']) != old or n % (10 * args.val_interval) == 0:
            print('step %d: validation accuracy noise %.1f %% blur %.1f %%; sigma %.4g alpha %.2f%s' % (
                n, acc_noise, acc_blur, st['sigma'], st['alpha'],
                ' (curriculum moved)' if (st['sigma'], st['alpha']) != old else ''), flush=True)
    return step, nmd.tf_weights, lambda: st, validate


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    torch.manual_seed(args.seed)
    val = None
    if args.stage == 'NMD':                  # worker processes first, CUDA after
        held = set(open(args.val_list).read().split()) if args.val_list else set()
        if not held:
            raise SystemExit('--stage NMD needs --val_list (images held out for the curriculum\'s validation)')
        data = Patches(args.data, args.seed, 'NMD', args.nmd_patch, args.nmd_stride, lambda n: n not in held, 4)
        val = Patches(args.data, args.seed, 'NMD', args.nmd_patch, args.nmd_stride, lambda n: n in held, 1)
    else:
        data = Patches(args.data, args.seed)
    dev = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    data.to(dev)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.precision == 'fp32'
    amp = torch.autocast(dev.type, torch.bfloat16, enabled=args.precision == 'bf16')
    if args.stage == 'NMD':
        val = [as_float(t.to(dev)) for t in (val.lr, val.hr)]
        step, weights, state, after = nmd_stage(args, data, val, dev, amp)
    else:
        step, weights, state, after = generator_stage(args, data, dev, amp)
    print('%s x%d on %s: %d patches x %d transforms%s, batch %d, data ready in %.1f s' % (
        args.stage, data.scale, torch.cuda.get_device_name() if dev.type == 'cuda' else 'CPU',
        len(data.hr), data.augment, ', %d validation patches' % len(val[1]) if val else '',
        args.batch_size, time.time() - t0), flush=True)

    def save(n):
        save_parts(weights(), args.out)
        with open(args.out + '.json.tmp', 'w') as f:
            json.dump(dict(state(), stage=args.stage, step=n, seconds=time.time() - t_start, log=log), f, indent=1)
        os.replace(args.out + '.json.tmp', args.out + '.json')

    log, n, acc = [], 0, {}
    t_start = last_save = time.time()
    while n < args.max_steps and time.time() - t_start < args.seconds:
        losses = step()
        n += 1
        for k, v in losses.items():
            acc[k] = acc.get(k, 0.0) + v.detach()
        after(n)
        if n % args.log_every == 0:
            row = {k: float(v) / args.log_every for k, v in acc.items()}
            if not all(math.isfinite(v) for v in row.values()):
                raise SystemExit('step %d: non-finite loss %s; last saved weights kept' % (n, row))
            row.update(step=n, seconds=round(time.time() - t_start, 1))
            log.append(row)
            acc = {}
            print(' '.join('%s=%.5g' % kv for kv in row.items()), flush=True)
        if time.time() - last_save > args.save_every:
            save(n)
            last_save = time.time()
    save(n)
    print('%s: %d steps in %.0f s, weights -> %s.part*.npz' % (args.stage, n, time.time() - t_start, args.out))


if __name__ == '__main__':
    main()
