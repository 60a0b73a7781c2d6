"""The requirement files against the environment the tests run in: every package that a pinned package
pulls in is pinned too (requirements/lock.txt holds those the files do not name), and the installed
version is the pinned one, so the README's test command gives every machine the same set of packages."""
import glob
import importlib.metadata
import os
import re

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _name(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def pins(root=ROOT):
    """{package: specifier} of every `name==version` line of requirements.txt and requirements/*.txt."""
    pinned = {}
    for path in [os.path.join(root, 'requirements.txt')] + sorted(glob.glob(os.path.join(root, 'requirements', '*.txt'))):
        with open(path) as f:
            for line in f:
                line = line.split('#', 1)[0].strip()
                if '==' in line and not line.startswith('-'):
                    requirement = Requirement(line)
                    pinned[_name(requirement.name)] = requirement.specifier
    return pinned


def installed():
    """{package: (version, [requirement strings])} of the running interpreter's distributions; of two
    copies of one (a venv over system site-packages), the one found first on sys.path, which imports."""
    found = {}
    for d in importlib.metadata.distributions():
        found.setdefault(_name(d.metadata['Name']), (d.version, d.requires or []))
    return found


def drift(pinned, present):
    """One line per problem in the closure of the installed pinned packages: a dependency that no file
    pins, or an installed version that is not the pinned one. Requirements for extras and for other
    platforms are left out; so is a dependency that is not installed (lpips.txt and app.txt install with
    --no-deps by design: what they leave out is never imported)."""
    problems, seen = [], set()
    todo = [name for name in pinned if name in present]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        version, requires = present[name]
        if name not in pinned:
            problems.append('%s %s is installed as a dependency but no requirement file pins it' % (name, version))
        elif not pinned[name].contains(version, prereleases=True):  # 2.13.0 admits 2.13.0+cpu
            problems.append('%s is pinned to %s but %s is installed' % (name, pinned[name], version))
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({'extra': ''}):
                continue
            if _name(requirement.name) in present:
                todo.append(_name(requirement.name))
    return sorted(problems)


def test_every_dependency_is_pinned_at_its_installed_version():
    assert drift(pins(), installed()) == []


def test_drift_finds_an_unpinned_and_a_stale_dependency():
    present = {
        'anyio': ('4.16.0', ['typing_extensions>=4.5', 'trio>=0.31; extra == "trio"', 'exceptiongroup; python_version < "3.0"']),
        'typing-extensions': ('4.15.0', []), 'idna': ('3.21', []), 'trio': ('0.31', []), 'exceptiongroup': ('1.0', []),
    }
    pinned = {'anyio': SpecifierSet('==4.16.0'), 'typing-extensions': SpecifierSet('==4.16.0')}
    assert drift(pinned, present) == ['typing-extensions is pinned to ==4.16.0 but 4.15.0 is installed']
    assert drift({'anyio': SpecifierSet('==4.16.0')}, present) == [
        'typing-extensions 4.15.0 is installed as a dependency but no requirement file pins it']


def test_lock_is_read_by_base():
    with open(os.path.join(ROOT, 'requirements', 'base.txt')) as f:
        assert '-c lock.txt' in f.read().splitlines()
    assert 'typing-extensions' in pins()
