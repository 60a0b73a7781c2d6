"""The three networks of model.py in PyTorch, layer for layer: FRACTAL (`Fractal`, scope GEN), the
NMD (scope CLASSIFIER) and the spectral-normalised Discriminator (scope DIS), NCHW (channels-last
memory works too), with TensorFlow's 'SAME' padding and the TF1 initialisers of ops.py.

Each network lists its convolutions under their TensorFlow names (`tf_layers()`), in the order
of model.py; `load_tf_weights(net, weights)` copies the weights of a TF scope (a dict
`GEN/conv1/conv2d/kernel` -> HWIO array, e.g. `sr.Generator.weights()`, a checkpoint, or
convert_weights.load_parts) into a network, `tf_weights(net)` goes the other way, so that both
frameworks compute the same function (tests/test_torch_mirror.py).
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CHANNELS = 64
NUM_BLOCKS = 8


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


def init_tf1(net):
    """ops.conv2d's initialisers on `net` (Fractal or NMD), in model.py's order: He before a ReLU,
    Glorot uniform otherwise; zero biases. (The Discriminator's SNConv initialises itself.)"""
    for _, conv, _, act in net.tf_layers():
        (he_ if act else glorot_)(conv.weight.data)
        nn.init.zeros_(conv.bias)
    return net


# ----------------------------------------------------------------------------- layers

def conv(cin, cout, k=3):
    """A stride-1 'SAME' convolution with bias (for odd k, TF's SAME pads k // 2 on every side)."""
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=True)


def same_pad(x, k, stride):
    """TensorFlow 'SAME' padding (the extra pixel goes right / bottom)."""
    pads = []
    for size in (x.shape[3], x.shape[2]):
        total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def l2_normalize(v, eps=1e-12):
    """ops.l2_normalize: v / (||v|| + eps) over the whole tensor."""
    return v / (v.square().sum().sqrt() + eps)


class SNConv(nn.Module):
    """ops.conv2d_sn: kernel / sigma(kernel), sigma by one power iteration per forward pass,
    `u` [1, out] updated in place. As in ops.spectral_norm (and the original), the gradient
    flows through the power iteration; the stored `u` alone is a constant. The power iteration
    runs in fp32 outside autocast, as in the TF graph. He-initialised kernel (ops.conv2d_sn)."""

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


# ----------------------------------------------------------------------------- networks

class RDB(nn.Module):
    """Residual dense block: conv0..conv4 (3x3 + ReLU) on the growing concatenation, 1x1 fusion."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([conv(CHANNELS * (i + 1), CHANNELS) for i in range(5)])
        self.fusion = conv(CHANNELS * 6, CHANNELS, 1)

    def forward(self, x):
        feats = [x]
        for i, c in enumerate(self.convs):
            inp = x if i == 0 else torch.cat(feats, 1)
            feats.append(F.relu(c(inp)))
        return x + 0.1 * self.fusion(torch.cat(feats, 1))


class Fractal(nn.Module):
    """model.FRACTAL xscale: RGB [N, 3, H, W] in [0, 1] -> [N, 3, sH, sW], unclipped."""
    SCOPE = 'GEN'

    def __init__(self, scale=4):
        super().__init__()
        self.scale = scale
        self.conv1 = conv(3, CHANNELS)
        self.blocks = nn.ModuleList([RDB() for _ in range(NUM_BLOCKS)])
        self.conv2 = conv(CHANNELS, CHANNELS)
        if scale == 4:
            self.conv_up1 = conv(CHANNELS, CHANNELS * 4)
            self.conv_up2 = conv(CHANNELS, CHANNELS * 4)
        else:
            self.conv_up1 = conv(CHANNELS, CHANNELS * scale * scale)
        self.conv_out = conv(CHANNELS, 3)

    def forward(self, x):
        b = self.blocks
        head = self.conv1(x)
        a = b[1](b[0](head)) + head
        bb = b[3](b[2](a)) + a + head
        c = b[5](b[4](bb)) + bb
        d = b[7](b[6](c)) + c + bb + head
        x = head + self.conv2(d)
        if self.scale == 4:
            x = F.pixel_shuffle(self.conv_up1(x), 2)
            x = F.pixel_shuffle(self.conv_up2(x), 2)
        else:
            x = F.pixel_shuffle(self.conv_up1(x), self.scale)
        return self.conv_out(x)

    def tf_layers(self):
        """(TF name under GEN/, conv, depth_to_space block after it or 0, activation) of every conv."""
        out = [('conv1/conv2d', self.conv1, 0, None), ('conv2/conv2d', self.conv2, 0, None),
               ('conv_out/conv2d', self.conv_out, 0, None)]
        for k, blk in enumerate(self.blocks):
            out += [('Block%d/conv%d/conv2d' % (k, i), c, 0, 'relu') for i, c in enumerate(blk.convs)]
            out.append(('Block%d/conv_fusion/conv2d' % k, blk.fusion, 0, None))
        if self.scale == 4:
            out += [('conv_up1/conv2d', self.conv_up1, 2, None), ('conv_up2/conv2d', self.conv_up2, 2, None)]
        else:
            out.append(('conv_up1/conv2d', self.conv_up1, self.scale, None))
        return out


class NMD(nn.Module):
    """model.NMD: VGG-style, 2x2 max-pools (VALID), logit = spatial mean of conv5_1."""
    SCOPE = 'CLASSIFIER'
    NAMES = ['conv%d_%d' % (s, i) for s in range(1, 5) for i in (1, 2)] + ['conv5_1']

    def __init__(self):
        super().__init__()
        chans, convs, cin = (64, 64, 128, 128, 256, 256, 512, 512, 1), [], 3
        for c in chans:
            convs.append(conv(cin, c))
            cin = c
        self.convs = nn.ModuleList(convs)

    def forward(self, x):
        for i, c in enumerate(self.convs[:-1]):
            x = F.relu(c(x))
            if i % 2:
                x = F.max_pool2d(x, 2, 2)
        return self.convs[-1](x).mean(dim=(1, 2, 3))

    def tf_layers(self):
        return [('%s/conv2d' % name, c, 0, 'relu' if name != 'conv5_1' else None)
                for name, c in zip(self.NAMES, self.convs)]


class Discriminator(nn.Module):
    """model.Discriminator: 10 SN convs with LeakyReLU 0.2, conv6_1 to 1 channel, spatial mean."""
    SCOPE = 'DIS'
    NAMES = ['conv%d_%d' % (s, i) for s in range(1, 6) for i in (1, 2)] + ['conv6_1']

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

    def tf_layers(self):
        return [(name, c, 0, 'lrelu' if name != 'conv6_1' else None)
                for name, c in zip(self.NAMES, list(self.convs) + [self.out])]


# ----------------------------------------------------------------------------- TF weights

def _block_order(cout, r):
    """Before a depth_to_space of block r, TF orders the output channels as (i*r + j)*C + c,
    torch's pixel_shuffle as c*r*r + i*r + j: torch channel t holds TF channel order[t]."""
    c, i, j = np.meshgrid(np.arange(cout), np.arange(r), np.arange(r), indexing='ij')
    return ((i * r + j) * cout + c).reshape(-1)


def load_tf_weights(net, weights, scope=None):
    """Copy TensorFlow weights (`{'GEN/conv1/conv2d/kernel': [k, k, in, out] array, ...}`, and
    the spectral norm's `u`) into `net`, under `scope` (default: the network's own).

    Kernels go from HWIO to OIHW; the output channels of a convolution before a depth_to_space
    are permuted (_block_order) so that both give the same image. Every weight of the scope must
    be used (ValueError otherwise)."""
    scope = scope or net.SCOPE
    used = set()
    with torch.no_grad():
        for name, mod, r, _ in net.tf_layers():
            kname, bname = '%s/%s/kernel' % (scope, name), '%s/%s/bias' % (scope, name)
            kernel = np.asarray(weights[kname], np.float32).transpose(3, 2, 0, 1)
            bias = np.asarray(weights[bname], np.float32)
            if r:
                order = _block_order(kernel.shape[0] // (r * r), r)
                kernel, bias = kernel[order], bias[order]
            if tuple(mod.weight.shape) != kernel.shape:
                raise ValueError('%s: TF kernel %s, torch %s' % (kname, kernel.shape, tuple(mod.weight.shape)))
            mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
            mod.bias.copy_(torch.from_numpy(bias))
            used.update((kname, bname))
            if isinstance(mod, SNConv):
                mod.u.copy_(torch.from_numpy(np.asarray(weights['%s/%s/u' % (scope, name)], np.float32)))
                used.add('%s/%s/u' % (scope, name))
    left = sorted(n for n in weights if n.startswith(scope + '/') and n not in used)
    if left:
        raise ValueError('weights not used by the torch model: %s' % left[:3])
    return net


def tf_weights(net, scope=None):
    """The inverse of load_tf_weights: `{'GEN/conv1/conv2d/kernel': HWIO array, ...}` of `net`."""
    scope = scope or net.SCOPE
    out = {}
    with torch.no_grad():
        for name, mod, r, _ in net.tf_layers():
            kernel = mod.weight.detach().float().cpu().numpy()
            bias = mod.bias.detach().float().cpu().numpy()
            if r:
                inv = np.argsort(_block_order(kernel.shape[0] // (r * r), r))  # TF channel q <- torch inv[q]
                kernel, bias = kernel[inv], bias[inv]
            out['%s/%s/kernel' % (scope, name)] = np.ascontiguousarray(kernel.transpose(2, 3, 1, 0))
            out['%s/%s/bias' % (scope, name)] = np.ascontiguousarray(bias)
            if isinstance(mod, SNConv):
                out['%s/%s/u' % (scope, name)] = mod.u.detach().float().cpu().numpy().copy()
    return out


def run(net, lr, channels_last=False):
    """float [H, W, 3] numpy -> float32 [sH, sW, 3] numpy, with torch.inference_mode()."""
    x = torch.from_numpy(np.ascontiguousarray(lr, np.float32).transpose(2, 0, 1)[None])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        y = net(x)
    return y[0].permute(1, 2, 0).contiguous().numpy()
