"""NMD, FRSR and NatSR training in PyTorch, for a GPU machine that has PyTorch but no TensorFlow.

The command line of tools/torch_train.py. It mirrors train.py and Train_NMD/train.py: the networks
of model.py (networks.py), their TF1 initialisers, the losses (losses.py; FRSR: L1; NatSR: L1 +
1e-3 * naturalness + 1e-3 * RaGAN, one D step then one G step per batch, DIS with one power
iteration per forward pass, TF 'SAME' padding), Adam (beta1 0.9) at 2e-4, and the data rule of
generate_Dataset (data.py: kept grid patches, 8 dihedral transforms, shuffled); for the NMD, the
batch composition, DCT noise, blur and curriculum of Train_NMD: its constants are those of
Train_NMD/config.py, its rule is Train_NMD/curriculum.py (both read, not copied). Weights are
written with the TensorFlow names (`GEN/conv1/conv2d/kernel`, HWIO) as .npz parts under 16 MB each;
tools/convert_weights.py turns them into the shipping TF checkpoint.
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F

from Train_NMD import config as nmd_config, degrade
from Train_NMD.curriculum import curriculum_update

from .data import Patches, as_float, inject_dct
from .losses import l1, naturalness, ragan
from .parts import load_parts, save_parts
from .networks import NMD, Discriminator, Fractal, init_tf1, load_tf_weights, tf_weights


def parse_args(argv):
    """The flags; then every other constant of Train_NMD/config.py under its flag name in
    Train_NMD/main.py (lower case: args.noise_sigma, args.sigma_decay, ...), as the curriculum
    reads them."""
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
    for name, value in vars(nmd_config).items():
        if name.isupper() and not hasattr(args, name.lower()):
            setattr(args, name.lower(), value)
    return args


def adam(params, args):
    return torch.optim.Adam(params, args.learning_rate, betas=(args.beta1, 0.999), eps=1e-8)


def generator_stage(args, data, dev, amp):
    """FRSR (L1) or NatSR (D step, then G step with L1 + naturalness + RaGAN): (step, weights, state, after)."""
    gen = Fractal(data.scale)
    if args.init:
        load_tf_weights(gen, load_parts(args.init))
    else:
        init_tf1(gen)
    gen = gen.to(dev, memory_format=torch.channels_last).train()
    opt_g = adam(gen.parameters(), args)
    natsr = args.stage == 'NatSR'
    if natsr:
        if not (args.init and args.nmd):
            raise SystemExit('--stage NatSR needs --init (FRSR weights) and --nmd (NMD weights)')
        nmd = load_tf_weights(NMD(), load_parts(args.nmd)).to(dev, memory_format=torch.channels_last).eval()
        nmd.requires_grad_(False)                                   # frozen: in no optimizer
        dis = Discriminator().to(dev, memory_format=torch.channels_last).train()
        opt_d = adam(dis.parameters(), args)

    def step():
        lr, hr = data.batch(args.batch_size)
        with amp:
            sr = gen(lr)
        losses = {'l1': l1(sr, hr)}
        loss = losses['l1']
        if natsr:
            with amp:                                               # D step: SR is a constant
                c_real, c_fake = dis(hr), dis(sr.detach())
            loss_d, _ = ragan(c_real.float(), c_fake.float())
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            with amp:                                               # G step, updated DIS, frozen NMD
                c_real, c_fake, nmd_logit = dis(hr), dis(sr), nmd(sr)
            _, loss_gan = ragan(c_real.float(), c_fake.float())
            loss_nat = naturalness(nmd_logit.float())
            loss = loss + args.nat_weight * loss_nat + args.gan_weight * loss_gan
            losses.update(d=loss_d, g_gan=loss_gan, nat=loss_nat, nmd=torch.sigmoid(nmd_logit.float()).mean())
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        return losses
    return step, lambda: tf_weights(gen), lambda: {}, lambda n: None


def nmd_stage(args, data, val, dev, amp):
    """The NMD with the sigma / alpha curriculum (Train_NMD/train.py): batch = [noisy quarter |
    blurry quarter | clean half], labels 0, 0, 1; validation every val_interval steps."""
    if args.batch_size % 4:
        raise SystemExit('--batch_size must be a multiple of 4 (noisy, blurry, clean, clean)')
    nmd = init_tf1(NMD()).to(dev, memory_format=torch.channels_last).train()
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
    return step, lambda: tf_weights(nmd), lambda: st, validate


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
    train_loop(args, step, weights, state, after)


def train_loop(args, step, weights, state, after):
    """Steps until --max_steps or --seconds; the loss means every --log_every steps (a non-finite one
    stops, keeping the last saved weights); weights and OUT.json saved atomically every --save_every
    seconds and at the end."""
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
