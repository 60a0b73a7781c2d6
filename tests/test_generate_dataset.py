"""generate_Dataset: patch content, determinism, the record format, interruption, bad inputs and
unwritable outputs (issues #3, #12, #13, #15).

Tiny synthetic images (noise with a flat band, so the filter keeps some patches and rejects
others); the expected records are recomputed here independently of patches.py.
"""
import builtins
import concurrent.futures.process
import errno
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import imageio.v3 as iio
import numpy as np
import pytest

from natsr.process import exits
import utils
from conftest import shared_path, tf_example
from generate_Dataset import build, cutting, patches, pool, records, shuffle, workdir
from natsr.imresize import imresize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = [(38, 45), (40, 34), (27, 52)]


def make_images(folder, seed=0, gray=True):
    """Noise images with a flat band; one grayscale; returns the folder."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i, (h, w) in enumerate(SIZES):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img[:, :w // 3] = 120 + 10 * i                   # flat: patches there fail the filter
        iio.imwrite(os.path.join(folder, 'im%d.png' % i), img)
    if gray:
        img = rng.integers(0, 256, (36, 36), dtype=np.uint8)
        img[:14] = 40
        iio.imwrite(os.path.join(folder, 'gray.bmp'), img)
    return str(folder)


def expected(files, scale, patch, stride, modes, kind):
    """Multiset of (label, image) bytes, and the (kept, rejected) counts, recomputed from scratch."""
    out, kept, rejected = [], 0, 0
    for f in files:
        hr = iio.imread(f)
        if hr.ndim == 2:
            hr = np.stack([hr] * 3, axis=2)
        hr = hr[:hr.shape[0] // scale * scale, :hr.shape[1] // scale * scale]
        lr = imresize(hr, 1.0 / scale)
        img, f_img = (imresize(lr, scale), 1) if kind == 'NMD' else (lr, scale)
        for y in range(0, hr.shape[0] - patch + 1, stride):
            for x in range(0, hr.shape[1] - patch + 1, stride):
                y0, x0 = y // scale * scale, x // scale * scale
                label = hr[y0:y0 + patch, x0:x0 + patch]
                q = label / 255.0
                grad = ((q[:-1, :-1] - q[1:, :-1]) ** 2 + (q[:-1, :-1] - q[:-1, 1:]) ** 2).mean()
                if not (grad >= 0.005 and q.var() >= 0.03):
                    rejected += 1
                    continue
                kept += 1
                small = img[y0 // f_img:(y0 + patch) // f_img, x0 // f_img:(x0 + patch) // f_img]
                for m in modes:
                    a, b = np.rot90(label, m // 2), np.rot90(small, m // 2)
                    if m % 2:
                        a, b = a[::-1], b[::-1]
                    out.append(a.tobytes() + b.tobytes())
    return sorted(out), kept, rejected


def read(path):
    meta = records.load_sidecar(path)
    return [a.tobytes() + b.tobytes() for a, b in records.read_numpy(path, meta)], meta


def gen(kind, *args):
    return build.main(kind, [str(a) for a in args])


def folder_files(folder):
    return sorted(os.path.join(folder, f) for f in os.listdir(folder))


@pytest.mark.parametrize('scale,patch,stride', [(2, 16, 6), (3, 15, 7)])
def test_natsr_records_are_aligned_crops_under_8_transforms(tmp_path, scale, patch, stride):
    hr = make_images(tmp_path / 'hr')
    out = tmp_path / 'o' / 'sr.tfrecord'
    assert gen('NatSR', '--labelpath', hr, '--tfrecord', out, '--scale', scale, '--patch', patch,
               '--stride', stride) == 0
    got, meta = read(str(out))
    want, kept, rejected = expected(folder_files(hr), scale, patch, stride, range(8), 'NatSR')
    assert kept and rejected                              # the filter did both
    assert sorted(got) == want and len(got) == meta['count'] == 8 * kept
    assert (meta['kept'], meta['rejected'], meta['images']) == (kept, rejected, 4)
    assert meta['label_shape'] == [patch, patch, 3] and meta['image_shape'] == [patch // scale] * 2 + [3]
    assert meta['kind'] == 'NatSR' and meta['scale'] == scale and meta['source'] == [os.path.abspath(hr)]
    assert sorted(os.listdir(tmp_path / 'o')) == ['sr.tfrecord', 'sr.tfrecord.json']   # no leftovers


def test_nmd_records_and_held_out_validation(tmp_path, capsys):
    hr = make_images(tmp_path / 'hr')
    out = tmp_path / 'nmd.tfrecord'
    assert gen('NMD', '--labelpath', hr, '--tfrecord', out, '--scale', 2, '--patch', 16, '--stride', 6,
               '--val_images', 1, '--seed', 3) == 0
    got, meta = read(str(out))
    val_got, val_meta = read(str(tmp_path / 'nmd_val.tfrecord'))
    held = meta['held_out']['images']
    assert len(held) == 1 and val_meta['image_files'] == held and val_meta['split'] == 'val'
    train_files = [f for f in folder_files(hr) if os.path.abspath(f) not in held]
    want, kept, _ = expected(train_files, 2, 16, 6, range(4), 'NMD')
    assert sorted(got) == want and meta['count'] == 4 * kept and meta['kind'] == 'NMD'
    assert meta['image_shape'] == meta['label_shape'] == [16, 16, 3]
    val_want, val_kept, _ = expected(held, 2, 16, 6, [0], 'NMD')
    assert sorted(val_got) == val_want and val_meta['count'] == val_kept > 0
    assert 'nmd_val.tfrecord: %d records' % val_kept in capsys.readouterr().out


def test_records_check_kind_scale_and_patch_of_a_sidecar():
    """records.check: the one check the trainers make of a TFRecord's sidecar; None / 0 skip a rule."""
    meta = {'count': 4, 'label_shape': [96, 96, 3], 'image_shape': [24, 24, 3], 'scale': 4, 'kind': 'NatSR'}
    assert records.check(meta, 'NatSR', 4, 96) is meta
    assert records.check(meta, 'NatSR', None, None) is meta and records.check(meta, 'NatSR', 4, 0) is meta
    for args, message in (
            (('NMD', 4, None), 'a NatSR TFRecord; this trainer needs a NMD one, from generate_TrainNMD.py'),
            (('NatSR', 2, None), 'made for x4, --scale is 2'),
            (('NatSR', 4, 192), "holds 96-pixel HR patches, --patch_size is 192 (leave --patch_size out: the "
                                "TFRecord's sidecar sets it)")):
        with pytest.raises(ValueError) as e:
            records.check(meta, *args)
        assert str(e.value) == message


def test_datapath_pairs_by_name_and_matches_computed_lr(tmp_path):
    hr = make_images(tmp_path / 'hr', gray=False)
    lr = tmp_path / 'lr'
    os.makedirs(lr)
    for i, f in enumerate(folder_files(hr)):
        name = os.path.basename(f)[:-4] + ('.png', 'x2.png', '_x2.png')[i % 3]   # plain, DIV2K, and _x2 names
        img = iio.imread(f)
        iio.imwrite(lr / name, imresize(img[:img.shape[0] // 2 * 2, :img.shape[1] // 2 * 2], 0.5))
    a, b = tmp_path / 'a.tfrecord', tmp_path / 'b.tfrecord'
    common = ['--labelpath', hr, '--scale', 2, '--patch', 16, '--stride', 6]
    assert gen('NatSR', *common, '--tfrecord', a) == 0
    assert gen('NatSR', *common, '--datapath', lr, '--tfrecord', b) == 0
    assert a.read_bytes() == b.read_bytes()
    assert json.loads((tmp_path / 'b.tfrecord.json').read_text())['datapath'] == [os.path.abspath(lr)]
    # NMD: an LR folder (ILR = imresize(LR, s)) or an ILR folder (images of the HR size) give the computed set
    ilr = tmp_path / 'ilr'
    os.makedirs(ilr)
    for f in folder_files(lr):
        iio.imwrite(ilr / os.path.basename(f), imresize(iio.imread(f), 2))
    common += ['--val_images', 1]
    for i, data in enumerate([[], ['--datapath', lr], ['--datapath', ilr]]):
        assert gen('NMD', *common, *data, '--tfrecord', tmp_path / ('n%d.tfrecord' % i)) == 0
        assert (tmp_path / ('n%d.tfrecord' % i)).read_bytes() == (tmp_path / 'n0.tfrecord').read_bytes()
        assert (tmp_path / ('n%d_val.tfrecord' % i)).read_bytes() == (tmp_path / 'n0_val.tfrecord').read_bytes()


def test_same_seed_same_bytes_across_processes_other_seed_other_order(tmp_path):
    hr = make_images(tmp_path / 'hr')
    common = ['--labelpath', hr, '--scale', 2, '--patch', 16, '--stride', 6]
    a, b, c = (tmp_path / n for n in ('a.tfrecord', 'b.tfrecord', 'c.tfrecord'))
    assert gen('NatSR', *common, '--tfrecord', a, '--seed', 5) == 0
    # the script itself, in another process (protobuf map order differs between processes)
    run = subprocess.run([sys.executable, os.path.join(ROOT, 'generate_Dataset', 'generate_NatSR.py')]
                         + [str(x) for x in common] + ['--tfrecord', str(b), '--seed', '5'],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert 'b.tfrecord: ' in run.stdout and 'kept' in run.stdout
    assert a.read_bytes() == b.read_bytes()
    assert gen('NatSR', *common, '--tfrecord', c, '--seed', 6) == 0
    ra, rc = read(str(a))[0], read(str(c))[0]
    assert ra != rc and sorted(ra) == sorted(rc)


def test_oversized_shards_are_split_again(tmp_path, monkeypatch):
    hr = make_images(tmp_path / 'hr')
    common = ['--labelpath', hr, '--scale', 2, '--patch', 16, '--stride', 6]
    assert gen('NatSR', *common, '--tfrecord', tmp_path / 'a.tfrecord') == 0
    monkeypatch.setattr(build, 'MAX_SHARDS', 2)
    assert gen('NatSR', *common, '--tfrecord', tmp_path / 'b.tfrecord', '--shard_mb', 0.004) == 0
    a, b = read(str(tmp_path / 'a.tfrecord'))[0], read(str(tmp_path / 'b.tfrecord'))[0]
    assert sorted(a) == sorted(b) and a != b
    assert sorted(os.listdir(tmp_path)) == ['a.tfrecord', 'a.tfrecord.json', 'b.tfrecord', 'b.tfrecord.json', 'hr']


def test_interrupt_while_writing_keeps_old_output_and_leaves_no_temp(tmp_path, monkeypatch, capsys):
    hr = make_images(tmp_path / 'hr')
    out = tmp_path / 'o' / 'x.tfrecord'
    common = ['--labelpath', hr, '--scale', 2, '--patch', 16, '--stride', 6, '--tfrecord', out]
    assert gen('NatSR', *common) == 0
    old, old_side = out.read_bytes(), (tmp_path / 'o' / 'x.tfrecord.json').read_bytes()
    real = shuffle.frame_records

    def interrupted(tfrecord, at, stores, which, offsets, modes, *rest):
        real(tfrecord, at, stores, which[:10], offsets[:10], modes[:10], *rest)   # some written, then Ctrl-C
        raise KeyboardInterrupt
    monkeypatch.setattr(shuffle, 'frame_records', interrupted)
    assert gen('NatSR', *common, '--seed', 1, '--workers', 1) == 130   # pass 2 in this process
    assert 'interrupted' in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / 'o')) == ['x.tfrecord', 'x.tfrecord.json']
    assert out.read_bytes() == old and (tmp_path / 'o' / 'x.tfrecord.json').read_bytes() == old_side


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGKILL], ids=['SIGTERM', 'SIGKILL'])
def test_killed_run_leaves_no_output(tmp_path, sig):
    hr = tmp_path / 'hr'
    os.makedirs(hr)
    img = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    for i in range(40):
        iio.imwrite(hr / ('%02d.png' % i), img)
    out = tmp_path / 'o'
    proc = subprocess.Popen([sys.executable, '-m', 'generate_Dataset.generate_NatSR', '--labelpath', str(hr),
                             '--tfrecord', str(out / 'k.tfrecord'), '--scale', '2', '--patch', '8',
                             '--stride', '2'], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not (out.is_dir() and any('.shards.' in n for n in os.listdir(out))):   # pass 1 has begun
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1]
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0                           # killed mid-way, not finished
    left = os.listdir(out)
    assert 'k.tfrecord' not in left and 'k.tfrecord.json' not in left
    if sig == signal.SIGTERM:
        assert left == [] and proc.returncode == 128 + signal.SIGTERM   # cleaned up on the way out
        assert proc.stderr.read().decode().splitlines()[-1] == 'interrupted'   # as after Ctrl-C
        return
    assert len(left) == 1 and left[0].startswith('.k.tfrecord.shards.')   # one hidden work folder
    # the next run over the same output removes it and says so in one line
    run = subprocess.run([sys.executable, '-m', 'generate_Dataset.generate_NatSR', '--labelpath', str(hr),
                          '--tfrecord', str(out / 'k.tfrecord'), '--scale', '2', '--patch', '32', '--stride', '32'],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    notes = [line for line in run.stderr.splitlines() if line.startswith('note: removed')]
    assert len(notes) == 1 and notes[0].startswith('note: removed 1 work folder(s) of interrupted runs beside %s (%s, '
                                                   % (out / 'k.tfrecord', left[0]))
    assert sorted(os.listdir(out)) == ['k.tfrecord', 'k.tfrecord.json']


# ----------------------------------------------------------------------------- bad inputs

def test_unreadable_small_gray_and_non_image_files(tmp_path, capsys):
    hr = make_images(tmp_path / 'hr')
    (tmp_path / 'hr' / 'broken.png').write_bytes(b'not an image at all')
    (tmp_path / 'hr' / 'notes.txt').write_text('hello')
    iio.imwrite(tmp_path / 'hr' / 'tiny.png', np.zeros((10, 40, 3), np.uint8))
    out = tmp_path / 'x.tfrecord'
    assert gen('NatSR', '--labelpath', hr, '--tfrecord', out, '--scale', 2, '--patch', 16, '--stride', 6) == 0
    cap = capsys.readouterr()
    assert 'broken.png: cannot read image' in cap.err and '(skipped)' in cap.err
    assert '1 file(s) without an image extension ignored' in cap.err
    assert '4 image(s) used, 1 smaller than the patch, 1 unreadable' in cap.out
    meta = records.load_sidecar(str(out))
    assert (meta['skipped_small'], meta['skipped_unreadable'], meta['images']) == (1, 1, 4)
    want, kept, rejected = expected([f for f in folder_files(hr) if f.endswith(('im0.png', 'im1.png', 'im2.png',
                                                                                 'gray.bmp'))],
                                    2, 16, 6, range(8), 'NatSR')
    assert sorted(read(str(out))[0]) == want                      # the gray image expanded to RGB


def bad(tmp_path, capsys, kind, *argv):
    """Run, expect exit 2 with a one-line error and nothing written; return the message."""
    assert gen(kind, *argv, '--tfrecord', tmp_path / 'out' / 'x.tfrecord') == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('error: ') and 'Traceback' not in '\n'.join(err)
    assert not (tmp_path / 'out').exists() or os.listdir(tmp_path / 'out') == []
    return err[-1]


def test_missing_and_empty_folders(tmp_path, capsys):
    missing = tmp_path / 'nope'
    assert bad(tmp_path, capsys, 'NatSR', '--labelpath', missing) == 'error: %s: no such folder' % missing
    os.makedirs(tmp_path / 'empty')
    (tmp_path / 'empty' / 'readme.txt').write_text('x')
    assert 'empty: no image files (.png' in bad(tmp_path, capsys, 'NatSR', '--labelpath', tmp_path / 'empty')


def test_lr_folder_names_and_sizes(tmp_path, capsys):
    hr = make_images(tmp_path / 'hr', gray=False)
    lr = tmp_path / 'lr'
    os.makedirs(lr)
    iio.imwrite(lr / 'im0x2.png', np.zeros((19, 22, 3), np.uint8))
    iio.imwrite(lr / 'im1x3.png', np.zeros((20, 17, 3), np.uint8))      # wrong scale: does not pair
    msg = bad(tmp_path, capsys, 'NatSR', '--labelpath', hr, '--datapath', lr, '--scale', 2, '--patch', 16)
    assert msg.startswith('error: %s: no LR image for 2 of 3 HR images (im1.png, im2.png)' % lr)
    iio.imwrite(lr / 'im1.png', np.zeros((20, 17, 3), np.uint8))
    iio.imwrite(lr / 'im2x2.png', np.zeros((13, 27, 3), np.uint8))      # HR 27x52 -> 26x52 -> 13x26
    msg = bad(tmp_path, capsys, 'NatSR', '--labelpath', hr, '--datapath', lr, '--scale', 2, '--patch', 16)
    assert msg == 'error: %s: 27x13 pixels, expected 26x13: the HR image, cropped to a multiple of 2 (52x26), ' \
                  'divided by the scale' % (lr / 'im2x2.png')
    iio.imwrite(lr / 'im2.png', np.zeros((13, 26, 3), np.uint8))
    assert 'LR images im2.png and im2x2.png both pair with HR image' in bad(
        tmp_path, capsys, 'NatSR', '--labelpath', hr, '--datapath', lr, '--scale', 2, '--patch', 16)


def test_nothing_kept_and_too_few_images_for_validation(tmp_path, capsys):
    flat = tmp_path / 'flat'
    os.makedirs(flat)
    iio.imwrite(flat / 'a.png', np.full((40, 40, 3), 9, np.uint8))
    assert 'x.tfrecord: no patch kept from 1 train image(s) (9 rejected by the filter' in bad(
        tmp_path, capsys, 'NatSR', '--labelpath', flat, '--scale', 2, '--patch', 16, '--stride', 12)
    assert 'cannot hold 1 out for validation' in bad(tmp_path, capsys, 'NMD', '--labelpath', flat, '--scale', 2,
                                                     '--patch', 16)


def test_a_validation_set_without_patches_names_the_options_to_change(tmp_path, capsys):
    """The held-out image (the one seed 0 draws of 4) keeps no patch: the message says what to change."""
    held = int(np.random.default_rng(np.random.SeedSequence(0).spawn(3)[0]).choice(4, 1, replace=False)[0])
    hr = make_images(tmp_path / 'hr')
    iio.imwrite(tmp_path / 'hr' / sorted(os.listdir(hr))[held], np.full((40, 40, 3), 9, np.uint8))
    msg = bad(tmp_path, capsys, 'NMD', '--labelpath', hr, '--scale', 2, '--patch', 16, '--val_images', 1)
    assert msg.startswith('error: %s: no patch kept from 1 val image(s) (' % (tmp_path / 'out' / 'x_val.tfrecord'))
    assert msg.endswith('; hold out more images (--val_images, --val_fraction)')


@pytest.mark.parametrize('kind, flags', [('NatSR', '--tfrecord names the output file'),
                                         ('NMD', '--tfrecord names the output file')])
def test_an_output_that_is_a_folder_names_its_option(tmp_path, capsys, kind, flags):
    hr = make_images(tmp_path / 'hr')
    os.makedirs(tmp_path / 'o.tfrecord')
    assert gen(kind, '--labelpath', hr, '--tfrecord', tmp_path / 'o.tfrecord', '--scale', 2, '--patch', 16) == 2
    assert capsys.readouterr().err == 'error: %s: is a folder; %s\n' % (tmp_path / 'o.tfrecord', flags)
    if kind == 'NMD':
        assert gen(kind, '--labelpath', hr, '--tfrecord', tmp_path / 'n.tfrecord', '--val_tfrecord',
                   tmp_path / 'o.tfrecord', '--scale', 2, '--patch', 16) == 2
        assert capsys.readouterr().err == 'error: %s: is a folder; --val_tfrecord names the validation output ' \
                                          'file\n' % (tmp_path / 'o.tfrecord')


def test_option_errors(capsys):
    for kind, argv, msg in [('NatSR', ['--scale', '3', '--patch', '100'], 'must be a multiple of --scale 3'),
                            ('NMD', ['--scale', '2', '--patch', '20'], 'needs a multiple of 8'),
                            ('NatSR', ['--augment', '9'], '--augment must be 1..8'),
                            ('NatSR', ['--datapath', 'a', 'b'], 'one folder per --labelpath')]:
        with pytest.raises(SystemExit) as e:
            gen(kind, '--labelpath', 'hr', *argv)
        assert e.value.code == 2 and msg in capsys.readouterr().err


def test_module_entry_points_fail_cleanly(tmp_path):
    run = subprocess.run([sys.executable, '-m', 'generate_Dataset.generate_TrainNMD', '--labelpath',
                          str(tmp_path / 'nope')], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.strip() == 'error: %s: no such folder' % (tmp_path / 'nope')
    assert not any(n.endswith('.tfrecord') for n in os.listdir(ROOT))


def test_grid_rounds_corners_to_the_scale_and_augment_order():
    from generate_Dataset import patches
    assert patches.grid(20, 14, 8, 5, 2) == [(y, x) for y in (0, 4, 10) for x in (0, 4)]
    assert patches.grid(8, 8, 8, 120, 4) == [(0, 0)] and patches.grid(7, 8, 8, 1, 1) == []
    a = np.arange(6).reshape(2, 3)
    assert [patches.augment(a, m).tolist() for m in (1, 2, 3)] == [
        a[::-1].tolist(), np.rot90(a).tolist(), np.rot90(a)[::-1].tolist()]


def test_augment_of_a_stack_is_the_augment_of_each_patch():
    stack = np.random.default_rng(0).integers(0, 256, (3, 5, 5, 3), dtype=np.uint8)
    for m in range(8):
        assert np.array_equal(patches.augment(stack, m, (1, 2)), [patches.augment(a, m) for a in stack])


# ----------------------------------------------------------------------------- the filter

def original_figures(patch):
    """The original's float64 statistics of one uint8 patch (np.mean / np.var)."""
    x = patch.astype(np.float64) / 255.0
    return np.mean((x[:-1, :-1] - x[1:, :-1]) ** 2 + (x[:-1, :-1] - x[:-1, 1:]) ** 2), np.var(x)


def test_filter_decides_like_the_original_even_at_the_thresholds():
    """patches.select (exact box sums) keeps what the original's float filter keeps, also when a
    threshold is set to a patch's own float figure or the next double either side of it."""
    rng = np.random.default_rng(0)
    for trial in range(60):
        p = int(rng.integers(2, 30))
        h, w = (int(v) for v in rng.integers(p, 3 * p, 2))
        hr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if trial % 3 == 0:
            hr = hr // 64 * 64                            # few levels: many equal figures
        if trial % 3 == 1:
            hr[:, :w // 2] = 100                          # flat half
        corners = patches.grid(h, w, p, 3, 1)
        y, x = corners[rng.integers(len(corners))]
        g, v = original_figures(hr[y:y + p, x:x + p])
        figures = np.array([original_figures(hr[a:a + p, b:b + p]) for a, b in corners])
        grad, var = patches.box_statistics(hr, p, patches.starts(h, p, 3, 1), patches.starts(w, p, 3, 1))
        assert np.allclose(grad, figures[:, 0], rtol=1e-12, atol=0)
        assert np.allclose(var, figures[:, 1], rtol=1e-12, atol=1e-30)    # flat: 0 here, ~1e-33 there
        for gt, vt in [(g, 0), (0, v), (np.nextafter(g, 1), 0), (0, np.nextafter(v, 1)), (g, v),
                       (np.nextafter(g, 0), np.nextafter(v, 0)), (0.005, 0.03)]:
            want = [c for c, (a, b) in zip(corners, figures) if a >= gt and b >= vt]
            assert patches.select(hr, p, 3, 1, gt, vt) == (want, len(corners) - len(want))


# ----------------------------------------------------------------------------- the record format

def test_records_are_the_bytes_of_tensorflows_serializer_and_writer(tmp_path):
    """example_parts, frame and seal give what tf.train.Example and tf.io.TFRecordWriter write, at
    lengths around the protobuf varint steps (127/128, 16383/16384)."""
    import tensorflow.compat.v1 as tf
    rng = np.random.default_rng(0)
    for label_len, image_len in [(1, 1), (100, 27), (127, 128), (16383, 16384), (27648, 1728), (110592, 6912)]:
        labels = rng.integers(0, 256, (4, label_len), dtype=np.uint8)
        images = rng.integers(0, 256, (4, image_len), dtype=np.uint8)
        with tf.io.TFRecordWriter(str(tmp_path / 'tf')) as w:
            for a, b in zip(labels, images):
                w.write(tf_example(a, b))
        head, middle = records.example_parts(label_len, image_len)
        assert all(head + b.tobytes() + middle + a.tobytes() == tf_example(a, b) for a, b in zip(labels, images))
        rows, image_cols, label_cols = records.frame(4, label_len, image_len)
        rows[:, image_cols], rows[:, label_cols] = images, labels
        assert records.seal(rows).tobytes() == (tmp_path / 'tf').read_bytes()


# The bytes of a generator whose records were written by TensorFlow's own serializer and writer, pass 1
# in one process, for make_images(...) with these options: the same inputs, options and seed must
# give the same bytes, serial or parallel, whatever writes them.
TF_WRITER_DIGESTS = {
    'a.tfrecord': '7aa4720512acd54af44f02c3a84a024e63d1bb6b83e725e4cf3b58f7fc3b9f1e',
    'n.tfrecord': '09a96a113cb3975260758012f6c2da10572885c4a39a4a51aa4f4706017e8aee',
    'n_val.tfrecord': 'd746c19b5056ad47f0a72d5be7b90b392e2f3b3e2ff586000ff0334c10519007',
    'b.tfrecord': '0c7ad418785c9a009adeaeae537b3e6c6e15657a47bd8787aa1be58a845611b6',
}
# ... and of one that shuffled the records themselves (not their indices), in shards dealt out again
RECORD_SHUFFLE_DIGESTS = {
    'c.tfrecord': 'f8cacc6257cce8738436d004ba6cdb914114b857dd6469533f998134ef7b2bdb',
}


@pytest.mark.parametrize('workers', [1, 3])
def test_same_bytes_as_before_serial_and_parallel(tmp_path, monkeypatch, workers):
    hr = make_images(tmp_path / 'hr')
    common = ['--labelpath', hr, '--scale', 2, '--patch', 16, '--stride', 6, '--workers', workers]
    assert gen('NatSR', *common, '--tfrecord', tmp_path / 'a.tfrecord', '--seed', 5) == 0
    assert gen('NMD', *common, '--tfrecord', tmp_path / 'n.tfrecord', '--val_images', 1, '--seed', 3) == 0
    monkeypatch.setattr(build, 'MAX_SHARDS', 2)           # oversized shards dealt out again
    assert gen('NatSR', '--labelpath', hr, '--scale', 3, '--patch', 15, '--stride', 4, '--workers', workers,
               '--tfrecord', tmp_path / 'b.tfrecord', '--shard_mb', 0.004) == 0
    monkeypatch.setattr(build, 'MAX_SHARDS', 16)          # dealt out again into fewer than MAX_SHARDS
    assert gen('NatSR', *common, '--tfrecord', tmp_path / 'c.tfrecord', '--seed', 7, '--shard_mb', 0.02) == 0
    for name, digest in {**TF_WRITER_DIGESTS, **RECORD_SHUFFLE_DIGESTS}.items():
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest, name
    meta = records.load_sidecar(str(tmp_path / 'a.tfrecord'))
    assert 'workers' not in meta['options']               # the sidecar does not depend on it either


def test_a_worker_that_dies_gives_one_line(tmp_path, monkeypatch, capsys):
    hr = make_images(tmp_path / 'hr')
    real = cutting.cut

    def dying(hr_path, *a, **k):
        if hr_path.endswith('im1.png'):
            os._exit(9)                                   # as the out-of-memory killer would
        return real(hr_path, *a, **k)
    monkeypatch.setattr(cutting, 'cut', dying)
    assert bad(tmp_path, capsys, 'NatSR', '--labelpath', hr, '--scale', 2, '--patch', 16, '--workers', 2) == \
        'error: a worker process died (out of memory? try fewer --workers)'


def test_a_pool_left_on_an_interrupt_leaves_no_thread_or_worker_behind(monkeypatch):
    """Ctrl-C / SIGTERM with work in flight: the workers are killed and the executor's threads have
    ended when the pool is left, so none of them races the interpreter's exit on its pipes. The
    executor's clean-up is slowed down here, as a loaded machine does."""
    manager = concurrent.futures.process._ExecutorManagerThread
    real = manager.terminate_broken

    def slow(self, cause):
        time.sleep(0.5)
        return real(self, cause)
    monkeypatch.setattr(manager, 'terminate_broken', slow)
    before = set(threading.enumerate())
    with pytest.raises(exits.Interrupted):
        with pool.Pool(2) as workers:
            futures = [workers.executor.submit(time.sleep, 30) for _ in range(4)]
            procs = list(workers.procs)
            time.sleep(0.2)
            raise exits.Interrupted(signal.SIGTERM)
    assert [t.name for t in threading.enumerate() if t not in before] == []
    assert len(procs) == 2 and not any(p.is_alive() for p in procs)
    assert all(f.done() for f in futures)


# ----------------------------------------------------------------------------- leftovers, unwritable output

def test_stale_work_folders_are_removed_and_reported_live_ones_kept(tmp_path, capsys):
    """Dead runs' work folders go whatever output they were writing; a live run's stay, known by its
    lock or by the live pid in the folder's name; a hidden folder without a lock file is not ours."""
    hr = make_images(tmp_path / 'hr')
    out = tmp_path / 'x.tfrecord'
    gone = subprocess.Popen([sys.executable, '-c', 'pass'])
    gone.wait()                                           # a pid that no process has now
    names = ('.x.tfrecord.shards.dead', '.x.tfrecord.shards.live', '.y.tfrecord.shards.dead',
             '.z.tfrecord.shards.%d.abc' % gone.pid, '.z.tfrecord.shards.%d.abc' % os.getpid(), '.w.shards.mine')
    for n in names:
        os.makedirs(tmp_path / n)
        (tmp_path / n / '000').write_bytes(b'\0' * 5000)
        if n != '.w.shards.mine':
            (tmp_path / n / 'lock').write_text('')
    with open(tmp_path / names[1] / 'lock') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)                  # a generator still running over the same output
        assert gen('NatSR', '--labelpath', hr, '--tfrecord', out, '--scale', 2, '--patch', 16) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith('note: removed')]
    assert notes == ['note: removed 3 work folder(s) of interrupted runs beside %s (.x.tfrecord.shards.dead, '
                     '.y.tfrecord.shards.dead, .z.tfrecord.shards.%d.abc, 0.0 MB)' % (out, gone.pid)]
    assert sorted(os.listdir(tmp_path)) == sorted([names[1], names[4], names[5], 'hr', 'x.tfrecord', 'x.tfrecord.json'])


def test_read_only_output_folder_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    hr = make_images(tmp_path / 'hr')
    ro = tmp_path / 'ro'
    os.makedirs(ro)
    os.chmod(ro, 0o555)
    if os.access(ro, os.W_OK):                            # root writes anyway: a read-only mount, simulated
        def read_only(prefix, dir):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.path.join(dir, prefix))
        monkeypatch.setattr(workdir.tempfile, 'mkdtemp', read_only)
        problem = os.strerror(errno.EROFS)
    else:
        problem = os.strerror(errno.EACCES)
    try:
        assert gen('NatSR', '--labelpath', hr, '--tfrecord', ro / 'x.tfrecord', '--scale', 2, '--patch', 16) == 2
    finally:
        os.chmod(ro, 0o755)
    err = capsys.readouterr().err
    assert err == 'error: %s: cannot write (%s)\n' % (ro / 'x.tfrecord', problem)   # not a line of progress
    assert os.listdir(ro) == []
    (tmp_path / 'notes.txt').write_text('a file')
    out = tmp_path / 'notes.txt' / 'sub' / 'x.tfrecord'
    assert gen('NatSR', '--labelpath', hr, '--tfrecord', out, '--scale', 2, '--patch', 16) == 2
    assert capsys.readouterr().err == 'error: %s: cannot write (%s is a file, not a folder)\n' % (
        out, tmp_path / 'notes.txt')


class FullDisk:
    """open() for the generator's modules whose written files hold `room` bytes in all, then raise
    ENOSPC, as a full disk does."""

    def __init__(self, room):
        self.room = room

    def __call__(self, path, mode='r', *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        return f if mode.startswith('r') and '+' not in mode else _Filling(f, self)


class _Filling:
    def __init__(self, f, disk):
        self.f, self.disk = f, disk

    def write(self, data):
        n = len(data.encode()) if isinstance(data, str) else memoryview(data).nbytes
        if n > self.disk.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.disk.room -= n
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize('room,workers,stage', [(20000, 1, 1), (60000, 1, 2), (500, 2, 1), (60000, 2, 2)],
                         ids=['pass 1', 'pass 2', 'pass 1 in workers', 'pass 2 in workers'])
def test_full_disk_is_one_line_and_leaves_the_old_output(tmp_path, monkeypatch, capsys, room, workers, stage):
    """54 patches kept, 432 records: pass 1 writes 51,840 bytes of patches (and 3,456 of shard
    indices), pass 2 a 434 kB TFRecord in one run of records: 20 kB fills up in pass 1, 60 kB in
    pass 2. Each worker process counts its own room (a fork's copy): 500 bytes fill up with the
    first image's patches, 60 kB with pass 2's run of records, whichever worker writes it."""
    hr = make_images(tmp_path / 'hr')
    out = tmp_path / 'o' / 'x.tfrecord'
    common = ['--labelpath', hr, '--scale', 2, '--patch', 16, '--stride', 6, '--tfrecord', out]
    assert gen('NatSR', *common) == 0
    old, old_side = out.read_bytes(), (tmp_path / 'o' / 'x.tfrecord.json').read_bytes()
    capsys.readouterr()
    for module in (cutting, shuffle, workdir, records):
        monkeypatch.setattr(module, 'open', FullDisk(room), raising=False)
    assert gen('NatSR', *common, '--seed', 1, '--workers', workers) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == 'error: %s: cannot write (%s)' % (out, os.strerror(errno.ENOSPC))
    assert ('shuffling' in '\n'.join(err)) == (stage == 2)              # where it stopped
    assert sorted(os.listdir(tmp_path / 'o')) == ['x.tfrecord', 'x.tfrecord.json']   # no partial file
    assert out.read_bytes() == old and (tmp_path / 'o' / 'x.tfrecord.json').read_bytes() == old_side


# ----------------------------------------------------------------------------- MATLAB-made LR (issue #12)

@pytest.mark.parametrize('scale', [2, 3, 4])
def test_set5_lr_patches_in_the_tfrecord_equal_the_matlab_crops(tmp_path, scale):
    """generate_NatSR.py on Set5 HR (LR computed by imresize) writes, for every HR patch, the crop of
    the MATLAB-made LR file at the same place, byte for byte. Records are shuffled: each record is
    matched to the HR positions that hold its label."""
    from generate_Dataset import generate_NatSR
    folder = shared_path('data', 'Set5')
    p = 12 * scale                                        # 12 x 12 LR patches, every one kept
    out = tmp_path / 'set5.tfrecord'
    assert generate_NatSR.main(['--labelpath', os.path.join(folder, 'HR'), '--scale', str(scale), '--patch', str(p),
                                '--stride', str(p // 2), '--augment', '1', '--grad_thresh', '0', '--var_thresh', '0',
                                '--tfrecord', str(out)]) == 0
    expected = {}
    for name in ('baby', 'bird', 'butterfly', 'head', 'woman'):
        hr = utils.read_rgb8(os.path.join(folder, 'HR', name + '.bmp'))
        hr = hr[:hr.shape[0] // scale * scale, :hr.shape[1] // scale * scale]
        lr = utils.read_rgb8(os.path.join(folder, 'LR_bicubic', 'X%d' % scale, '%sx%d.png' % (name, scale)))
        assert lr.shape[:2] == (hr.shape[0] // scale, hr.shape[1] // scale)
        for y in range(0, hr.shape[0] - p + 1, p // 2):
            for x in range(0, hr.shape[1] - p + 1, p // 2):
                crop = lr[y // scale:(y + p) // scale, x // scale:(x + p) // scale]
                expected.setdefault(hr[y:y + p, x:x + p].tobytes(), []).append(crop.tobytes())
    got = read(str(out))[0]
    assert len(got) == sum(len(v) for v in expected.values()) > 500
    for record in got:
        label, image = record[:3 * p * p], record[3 * p * p:]
        assert image in expected[label]                   # the MATLAB crop at one of the label's places
        expected[label].remove(image)
