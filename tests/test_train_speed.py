"""bench/train_speed.py runs every stage's training graph and reports its seconds per iteration."""
import os
import sys

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, 'bench'))
import train_speed  # noqa: E402


def test_reports_every_stage(capsys, monkeypatch):
    monkeypatch.setitem(train_speed.SHAPES, 'tiny', (4, 32))
    train_speed.main(['--shapes', 'tiny', '--iters', '1'])
    rows = [line.split('|')[1:-1] for line in capsys.readouterr().out.splitlines() if '| tiny |' in line]
    assert [r[0].strip() for r in rows] == ['NMD', 'FRSR', 'NatSR']
    for r in rows:
        sec, rate = float(r[4]), float(r[5])
        assert sec > 0 and abs(rate - 4 / sec) < 0.06 * rate + 0.1
