"""bench/train_speed.py runs every stage's training graph and reports its seconds per iteration, on a
fixed batch and (the input-bound check) through the trainers' pipeline on a TFRecord."""
from bench import train_speed


def test_reports_every_stage(capsys, monkeypatch):
    monkeypatch.setitem(train_speed.SHAPES, 'tiny', (4, 32))
    train_speed.main(['--shapes', 'tiny', '--iters', '1'])
    rows = [line.split('|')[1:-1] for line in capsys.readouterr().out.splitlines() if '| tiny |' in line]
    assert [r[0].strip() for r in rows] == ['NMD', 'FRSR', 'NatSR']
    for r in rows:
        sec, rate = float(r[4]), float(r[5])
        assert sec > 0 and abs(rate - 4 / sec) < 0.06 * rate + 0.1


def test_input_bound_check_reads_the_tfrecord(tmp_path, capsys):
    """--tfrecord: the iteration through the trainers' pipeline on that TFRecord, against the fixed
    batch, and the pipeline alone; the stages follow the TFRecord's kind."""
    import numpy as np
    import pytest
    from conftest import make_tfrecord
    from generate_Dataset import records
    path = make_tfrecord(str(tmp_path / 'sr.tfrecord'), 'NatSR', count=8, patch=32, scale=4)
    stage = train_speed.Stage('FRSR', 4, 32, 'fp32', scale=4, tfrecord=path)
    lr, hr = stage.sess.run(stage.batch)          # what the trainers read: the records, in [0, 1]
    stage.close()
    stored = [label for label, _ in records.read_numpy(path)]
    assert lr.shape == (4, 8, 8, 3) and hr.shape == (4, 32, 32, 3)
    assert all(any(np.array_equal(np.round(h * 255).astype(np.uint8), s) for s in stored) for h in hr)
    train_speed.main(['--tfrecord', path, '--batch', '4', '--iters', '1', '--stages', 'NMD,FRSR'])
    rows = [line.split('|')[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith('| FRSR')]
    assert len(rows) == 1                          # NMD skipped: a NatSR TFRecord does not train it
    fixed, real, ratio, pipeline, consumed = (float(v) for v in rows[0][4:9])
    assert min(fixed, real, ratio, pipeline, consumed) > 0
    with pytest.raises(SystemExit, match='a NatSR TFRecord: it trains FRSR, NatSR, not NMD'):
        train_speed.main(['--tfrecord', path, '--stages', 'NMD'])
