"""The generators' inputs: the HR image files of the --labelpath folders, their LR / ILR partners
(--datapath, paired by name, or computed), the images held out for validation, and an upper bound
of the output size from the image headers."""

import utils
from generate_Dataset import DataError, patches
from natsr.imresize import imresize


def list_folder(folder):
    """utils.list_folder, DataError where it fails."""
    try:
        return utils.list_folder(folder)
    except ValueError as e:
        raise DataError(str(e))


def pair(hr_files, lr_folder, scale):
    """The LR file of every HR file, by name (utils.pair_files: 0001.png <-> 0001.png, 0001x4.png
    (DIV2K) or 0001_x4.png); LR files without an HR one are left out."""
    try:
        lr_of = utils.pair_files(list_folder(lr_folder), hr_files, scale, every_lr=False)
    except ValueError as e:
        raise DataError('%s: %s' % (lr_folder, e))
    return [lr_of[hr] for hr in hr_files]


def find_images(args):
    """[(hr_path, lr_path or None)] over all --labelpath folders; every error before any writing."""
    pairs = []
    for i, folder in enumerate(args.labelpath):
        hr = list_folder(folder)
        lr = pair(hr, args.datapath[i], args.scale) if args.datapath else [None] * len(hr)
        pairs += zip(hr, lr)
    return pairs


def hold_out(pairs, args, rng):
    """(training pairs, validation pairs): whole images held out at random for the NMD set."""
    if getattr(args, 'val_fraction', None) is None:
        return pairs, []
    n = len(pairs)
    if args.val_images is not None:
        n_val = args.val_images
    else:
        n_val = max(1, int(round(args.val_fraction * n))) if args.val_fraction > 0 else 0
    if n_val >= n:
        raise DataError('%s: %d image(s): cannot hold %d out for validation and train on the rest '
                        '(see --val_images, --val_fraction)' % (' '.join(args.labelpath), n, n_val))
    val = set(rng.choice(n, n_val, replace=False).tolist())
    return ([q for i, q in enumerate(pairs) if i not in val], [q for i, q in enumerate(pairs) if i in val])


def degraded(hr, lr_path, scale, kind):
    """The LR (NatSR) or ILR (NMD) image of the modcropped HR `hr`: computed, or read from `lr_path`."""
    if lr_path is None:
        return patches.degrade(hr, scale, kind)
    lr = utils.read_rgb8(lr_path)
    h, w = hr.shape[:2]
    if kind == 'NMD' and lr.shape[:2] == (h, w):
        return lr                                     # already an ILR image
    if lr.shape[:2] != (h // scale, w // scale):
        raise DataError('%s: %dx%d pixels, expected %dx%d: the HR image, cropped to a multiple of %d '
                        '(%dx%d), divided by the scale' % (lr_path, lr.shape[1], lr.shape[0],
                                                          w // scale, h // scale, scale, w, h))
    return imresize(lr, scale) if kind == 'NMD' else lr


def estimate_bytes(pairs, args, patch_bytes):
    """Upper bound of the raw size of a set (every grid patch kept), from the image headers."""
    from PIL import Image
    n, s = 0, args.scale
    for hr, _ in pairs:
        try:
            with Image.open(hr) as im:
                w, h = im.size
        except Exception:  # unreadable: reported in pass 1
            continue
        n += len(patches.grid(h - h % s, w - w % s, args.patch, args.stride, s))
    return n * patch_bytes
