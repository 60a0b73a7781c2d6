"""FRACTAL (FRSR / NatSR generator) in PyTorch: the benchmark's peer, not a runtime dependency.

The architecture is the one of model.py, layer for layer (NCHW, or channels-last memory with
`channels_last=True`). `load_tf_weights(net, weights)` copies the weights of a TensorFlow GEN
scope (a dict `GEN/.../kernel` -> numpy array, e.g. from `sr.Generator.weights()` or a checkpoint),
so both frameworks compute the same function and their outputs can be compared; `tf_weights(net)`
goes the other way (tools/torch_train.py trains with it where TensorFlow is not installed).

    pip install -r requirements-bench.txt      # torch (CPU wheel)
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CHANNELS = 64
NUM_BLOCKS = 8


def conv(cin, cout, k=3):
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=True)


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
    """FRACTAL xscale: RGB [N, 3, H, W] in [0, 1] -> [N, 3, sH, sW], unclipped."""

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


def _tf_modules(net):
    """(TensorFlow layer name under GEN/, torch conv, depth_to_space block or 0) for every conv."""
    out = [('conv1', net.conv1, 0), ('conv2', net.conv2, 0), ('conv_out', net.conv_out, 0)]
    for k, blk in enumerate(net.blocks):
        out += [('Block%d/conv%d' % (k, i), c, 0) for i, c in enumerate(blk.convs)]
        out.append(('Block%d/conv_fusion' % k, blk.fusion, 0))
    if net.scale == 4:
        out += [('conv_up1', net.conv_up1, 2), ('conv_up2', net.conv_up2, 2)]
    else:
        out.append(('conv_up1', net.conv_up1, net.scale))
    return out


def load_tf_weights(net, weights, scope='GEN'):
    """Copy TensorFlow weights (`{'GEN/conv1/conv2d/kernel': [k, k, in, out] array, ...}`) into `net`.

    Kernels go from HWIO to OIHW. Before a depth_to_space of block r, TF orders the output
    channels as (i*r + j)*C + c, torch's pixel_shuffle as c*r*r + i*r + j: those convolutions'
    output channels are permuted so that both give the same image.
    """
    used = set()
    with torch.no_grad():
        for name, mod, r in _tf_modules(net):
            kname, bname = '%s/%s/conv2d/kernel' % (scope, name), '%s/%s/conv2d/bias' % (scope, name)
            kernel = np.asarray(weights[kname], np.float32).transpose(3, 2, 0, 1)
            bias = np.asarray(weights[bname], np.float32)
            if r:
                cout = kernel.shape[0] // (r * r)
                c, i, j = np.meshgrid(np.arange(cout), np.arange(r), np.arange(r), indexing='ij')
                perm = ((i * r + j) * cout + c).reshape(-1)  # torch channel t <- TF channel perm[t]
                kernel, bias = kernel[perm], bias[perm]
            if tuple(mod.weight.shape) != kernel.shape:
                raise ValueError('%s: TF kernel %s, torch %s' % (kname, kernel.shape, tuple(mod.weight.shape)))
            mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
            mod.bias.copy_(torch.from_numpy(bias))
            used.update((kname, bname))
    left = sorted(n for n in weights if n.startswith(scope + '/') and n not in used)
    if left:
        raise ValueError('weights not used by the torch model: %s' % left[:3])
    return net


def tf_weights(net, scope='GEN'):
    """The inverse of load_tf_weights: `{'GEN/conv1/conv2d/kernel': HWIO array, ...}` of `net`."""
    out = {}
    with torch.no_grad():
        for name, mod, r in _tf_modules(net):
            kernel = mod.weight.detach().float().cpu().numpy()
            bias = mod.bias.detach().float().cpu().numpy()
            if r:
                cout = kernel.shape[0] // (r * r)
                c, i, j = np.meshgrid(np.arange(cout), np.arange(r), np.arange(r), indexing='ij')
                inv = np.argsort(((i * r + j) * cout + c).reshape(-1))  # TF channel q <- torch channel inv[q]
                kernel, bias = kernel[inv], bias[inv]
            out['%s/%s/conv2d/kernel' % (scope, name)] = np.ascontiguousarray(kernel.transpose(2, 3, 1, 0))
            out['%s/%s/conv2d/bias' % (scope, name)] = np.ascontiguousarray(bias)
    return out


def run(net, lr, channels_last=False):
    """float [H, W, 3] numpy -> float32 [sH, sW, 3] numpy, with torch.inference_mode()."""
    x = torch.from_numpy(np.ascontiguousarray(lr, np.float32).transpose(2, 0, 1)[None])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        y = net(x)
    return y[0].permute(1, 2, 0).contiguous().numpy()
