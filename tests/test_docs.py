"""The documentation against the code: every option of every command's --help is named on that
command's own page of docs/ (PAGES), README.md stays a short guide, and the relative links of README.md and docs/*.md point
at files of the repository.

The options come from the programs' own parsers: one subprocess runs every program (`PROGRAMS`) as
`__main__` with `argparse.ArgumentParser.parse_known_args` replaced by a function that records the
parser and stops the program, so no program does any work and the TensorFlow import is paid once.
Run this file as a script to print the options it finds, one `program option` a line.
"""
import argparse
import glob
import json
import os
import re
import runpy
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every command-line program of the repository, as a user runs it (`python <path>`), and the page of
# docs/ that documents its options (each option must be named there, not merely on some page).
PAGES = {
    'test.py': 'test.md', 'main.py': 'training.md', 'export.py': 'export.md', 'app.py': 'app.md',
    'Train_NMD/main.py': 'training.md', 'Train_NMD/evaluate.py': 'training.md',
    'generate_Dataset/generate_NatSR.py': 'data.md', 'generate_Dataset/generate_TrainNMD.py': 'data.md',
    'tools/torch_train.py': 'torch_mirror.md', 'tools/convert_weights.py': 'torch_mirror.md',
    'tools/prepare_pool.py': 'torch_mirror.md',
    'bench/quality.py': 'benchmarks.md', 'bench/speed.py': 'benchmarks.md', 'bench/precision_psnr.py': 'benchmarks.md',
    'bench/train_speed.py': 'benchmarks.md', 'bench/int8.py': 'benchmarks.md',
}
PROGRAMS = list(PAGES)
README_MAX_LINES = 200
# Optional packages (requirements/bench.txt): a program that needs one that is absent is skipped.
OPTIONAL = ('torch',)


class _Parsed(Exception):
    """Raised in place of parsing: carries the parser the program built."""

    def __init__(self, parser):
        super().__init__()
        self.parser = parser


def _parser_options(parser, name):
    """(program name, option string) for every option that `parser` and its subcommands show in
    --help."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                out += _parser_options(sub, '%s %s' % (name, sub_name))
        if action.help == argparse.SUPPRESS:
            continue
        for option in action.option_strings:
            if option not in ('-h', '--help'):
                out.append((name, option))
    return out


def collect(programs=PROGRAMS):
    """({program: [option, ...]}, {program: why it was skipped}) from each program's parser, without
    letting any program run; a program is skipped only when an OPTIONAL package is absent."""
    def stop(self, args=None, namespace=None):
        raise _Parsed(self)

    argparse.ArgumentParser.parse_known_args = stop
    found, skipped = {}, {}
    for program in programs:
        path = os.path.join(ROOT, program)
        saved_path, saved_argv = list(sys.path), list(sys.argv)
        sys.path.insert(0, os.path.dirname(path))
        sys.argv = [path]
        try:
            runpy.run_path(path, run_name='__main__')
        except _Parsed as e:
            for name, option in _parser_options(e.parser, program):
                found.setdefault(name, []).append(option)
        except ModuleNotFoundError as e:
            if e.name not in OPTIONAL:
                raise
            skipped[program] = '%s is not installed' % e.name
        else:
            raise RuntimeError('%s: ended without parsing its command line' % program)
        finally:
            sys.path[:], sys.argv[:] = saved_path, saved_argv
    return found, skipped


def doc_files():
    return [os.path.join(ROOT, 'README.md')] + sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))


def undocumented(options, text):
    """The (program, option) pairs whose option string does not appear in `text` as a whole word
    (`--save` is not found inside `--savepath`)."""
    return [(program, option) for program, opts in sorted(options.items()) for option in opts
            if not re.search(r'(?<![\w-])%s(?![\w-])' % re.escape(option), text)]


def broken_links(path, text):
    """Relative markdown links and images of `text` (the file `path`) whose target does not exist;
    code blocks and code spans are not links."""
    prose = re.sub(r'`[^`\n]*`', '', re.sub(r'^```.*?^```', '', text, flags=re.M | re.S))
    out = []
    for target in re.findall(r'\]\(([^)\s]+)\)', prose):
        if re.match(r'[a-z]+:', target) or target.startswith('#'):
            continue
        file_part = target.split('#')[0]
        if not os.path.exists(os.path.normpath(os.path.join(os.path.dirname(path), file_part))):
            out.append(target)
    return out


def _read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def _options_of_programs():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), '--json'], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, 'collecting the options failed:\n' + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_option_is_documented():
    options, skipped = _options_of_programs()
    assert set(p.split(' ')[0] for p in options) | set(skipped) == set(PROGRAMS), 'a program built no parser'
    assert len(options.get('test.py', [])) > 10 and 'tools/convert_weights.py to-tf' in options
    missing = []
    for program, opts in sorted(options.items()):
        page = PAGES[program.split(' ')[0]]
        text = _read(os.path.join(ROOT, 'docs', page))
        missing += ['%s %s (docs/%s)' % (p, o, page) for p, o in undocumented({program: opts}, text)]
    assert not missing, "options in --help but not on the program's own page:\n" + '\n'.join(
        '  %s' % m for m in missing)


def test_undocumented_is_found():
    options = {'test.py': ['--model', '--save', '--savepath']}
    assert undocumented(options, 'use `--model` and --savepath') == [('test.py', '--save')]
    assert undocumented(options, '--model, --save; --savepath') == []


def test_every_program_is_listed():
    """A new command-line program (a file with a __main__ block) must join PROGRAMS."""
    mains = set()
    for path in glob.glob(os.path.join(ROOT, '**', '*.py'), recursive=True):
        rel = os.path.relpath(path, ROOT).replace(os.sep, '/')
        if rel.startswith('tests/') or rel.split('/')[0].startswith('.'):
            continue
        if re.search(r"^if __name__ == .__main__.:", _read(path), re.M):
            mains.add(rel)
    assert mains <= set(PROGRAMS), 'programs missing from tests/test_docs.py PROGRAMS: %s' % sorted(
        mains - set(PROGRAMS))


def test_readme_is_short():
    lines = _read(os.path.join(ROOT, 'README.md')).count('\n')
    assert lines <= README_MAX_LINES, 'README.md has %d lines, at most %d: move the detail to docs/' % (
        lines, README_MAX_LINES)


def test_links_point_into_the_repository():
    broken = ['%s: %s' % (os.path.relpath(p, ROOT), t) for p in doc_files() for t in broken_links(p, _read(p))]
    assert not broken, 'links to files that do not exist:\n' + '\n'.join(broken)


def test_broken_link_is_found(tmp_path):
    (tmp_path / 'a.md').write_text('x')
    page = str(tmp_path / 'page.md')
    text = '[a](a.md#s) [b](b.md) [w](https://x.org/c.md) [s](#top) ![i](img/c.png) `f[0](x)`\n```\nm[1](y)\n```\n'
    assert broken_links(page, text) == ['b.md', 'img/c.png']


if __name__ == '__main__':
    found, skipped = collect()
    if '--json' in sys.argv[1:]:
        print(json.dumps([found, skipped]))
    else:
        for program, opts in sorted(found.items()):
            for option in opts:
                print(program, option)
        for program, why in sorted(skipped.items()):
            print(program, 'skipped:', why)


def test_ci_runs_the_readme_test_command_as_written():
    """.ci/run holds the README's test command (the block after '<!-- the test command -->') as one line,
    word for word: a green CI means that a newcomer's run of that command passes."""
    readme = _read(os.path.join(ROOT, 'README.md'))
    block = readme.split('<!-- the test command -->', 1)[1].split('```', 2)[1]
    command = [line for line in block.splitlines()[1:] if line.strip()]
    assert len(command) == 1 and command[0].startswith('pip install'), command
    ci = _read(os.path.join(ROOT, '.ci', 'run')).splitlines()
    assert command[0] in ci, '.ci/run does not run the README test command: %s' % command[0]
