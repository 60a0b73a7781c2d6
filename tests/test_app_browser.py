"""app.py in a real browser: Debian's Chromium (/usr/bin/chromium) driven by Playwright's Python API.
One app, started once on a free loopback port (a session fixture; the tests share one xdist worker:
the group `browser`), serves every test: a Set5 image through FRSR, downloaded and compared with
test.py's output byte for byte; the dial; a text file's one-line error, after which the page still
works; every request the page makes goes to the app itself; SIGTERM ends the app with 143 and its
temporary folder removed. Screenshots and the request times go to artifacts/ (ARTIFACTS).
Skipped, with the reason, where Chromium, Playwright or Gradio is missing."""
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT, shared_path

CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync']
ARTIFACTS = os.environ.get('NATSR_ARTIFACTS', os.path.join(ROOT, 'artifacts'))
MISSING = ([] if os.path.exists(CHROMIUM) else ['%s not found (apt-get install chromium)' % CHROMIUM]) + [
    '%s not installed (pip install --no-deps -r requirements/app.txt)' % m
    for m in ('playwright', 'gradio') if importlib.util.find_spec(m) is None]
pytestmark = [pytest.mark.skipif(bool(MISSING), reason='; '.join(MISSING)), pytest.mark.xdist_group('browser'),
              pytest.mark.slow]
REQUESTS = []      # every URL the pages of the session asked for
TIMES = {}


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class App(object):
    """`python app.py --port <free>` in a process of its own, its output in a file."""

    def __init__(self, tmp):
        self.port = free_port()
        self.url = 'http://127.0.0.1:%d/' % self.port
        self.log = open(os.path.join(tmp, 'app.log'), 'w+')
        self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'app.py'), '--port', str(self.port)],
                                     cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        self.workdir = None

    def output(self):
        with open(self.log.name) as f:
            return f.read()

    def wait(self, timeout=180):
        end = time.time() + timeout
        while time.time() < end:
            assert self.proc.poll() is None, 'app.py exited: ' + self.output()[-2000:]
            m = re.search(r'serving \S+ \(temporary folder (\S+);', self.output())
            if m:
                with urllib.request.urlopen(self.url, timeout=10) as r:
                    assert r.status == 200
                self.workdir = m.group(1)
                return self
            time.sleep(0.3)
        self.proc.kill()
        raise AssertionError('app.py did not start: ' + self.output()[-2000:])


@pytest.fixture(scope='session')
def server(tmp_path_factory):
    app = App(str(tmp_path_factory.mktemp('app'))).wait()
    yield app
    if app.proc.poll() is None:
        app.proc.kill()
        app.proc.wait()


@pytest.fixture(scope='session')
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={'width': 1400, 'height': 1000}, accept_downloads=True)
    context.on('request', lambda r: REQUESTS.append(r.url))
    context.route(re.compile(r'^(?!http://127\.0\.0\.1[:/]).*'), lambda route: route.abort())   # recorded, not sent
    p = context.new_page()
    p.set_default_timeout(120000)
    p.goto(server.url)
    p.wait_for_selector('#run')
    yield p
    context.close()


def upload(p, path, tries=3, wait_ms=40000):
    """Give the page a file, as picking it does (with a file shown, its clear button first). Where the
    file's name does not show within `wait_ms` (a file given before the page's scripts listen is lost;
    CI saw that twice, on a fresh page, under load), the page is loaded afresh, the model chosen again,
    and the file given again: up to `tries` times in all."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    model = p.input_value('#model input')
    shown = '#upload :text("%s")' % os.path.basename(path)
    for attempt in range(tries):
        if attempt:
            p.reload()
            p.wait_for_selector('#run')
            if p.input_value('#model input') != model:
                choose(p, model)
        if not p.locator('#upload input[type=file]').count():
            p.click('#upload button[aria-label="Clear"], #upload button[title="Clear"], #upload .label-clear-button')
            p.wait_for_selector('#upload input[type=file]', state='attached')
        p.set_input_files('#upload input[type=file]', path)
        try:
            p.wait_for_selector(shown, timeout=wait_ms)
            TIMES.setdefault('uploads given again', 0)
            TIMES['uploads given again'] += attempt
            return
        except PlaywrightTimeout:
            pass
    raise AssertionError('%s not shown after %d tries; #upload holds: %s'
                         % (os.path.basename(path), tries, p.inner_html('#upload')[:1500]))


def choose(p, model):
    p.click('#model input')
    p.click('[role=option][aria-label="%s"]' % model)
    p.wait_for_function("(m) => document.querySelector('#model input').value === m", arg=model)


def set_dial(p, value):
    box = p.locator('#dial input[type=number]')
    box.fill(str(value))
    box.press('Enter')
    p.locator('#run').focus()


def toasts(p):
    return [t.strip() for t in p.locator('[data-testid=toast-text]').all_inner_texts()]


def run(p, timeout=300):
    """Press the button; (the info line, None) or (None, the error's text)."""
    before, old = len(toasts(p)), p.input_value('#info textarea')
    p.click('#run')
    end = time.time() + timeout
    while time.time() < end:
        info = p.input_value('#info textarea')
        if info and info != old:
            return info, None
        if toasts(p)[before:]:
            return None, toasts(p)[before:][-1]
        time.sleep(0.1)
    raise AssertionError('no result and no error after %d s' % timeout)


def download(p):
    p.wait_for_function("() => !document.querySelector('#download').disabled")
    with p.expect_download() as d:
        p.click('#download')
    with open(d.value.path(), 'rb') as f:
        return f.read()


def artifact(name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    return os.path.join(ARTIFACTS, name)


def test_set5_image_with_frsr_is_test_py_output(page, tmp_path):
    lr = shared_path('data', 'Set5', 'LR_bicubic', 'X4', 'babyx4.png')
    upload(page, lr)
    choose(page, 'FRSR')
    t = time.time()
    info, error = run(page)
    TIMES['first request (FRSR built), s'] = round(time.time() - t, 2)
    assert error is None and info.startswith('FRSR x4 in ') and 'whole image' in info, (info, error)
    got = download(page)
    res = subprocess.run([sys.executable, os.path.join(ROOT, 'test.py'), '--datapath', os.path.dirname(lr), '--model',
                          'FRSR', '--save', '1', '--savepath', str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)     # a process of its own, as a user runs it (oneDNN is chosen at start-up)
    assert res.returncode == 0, res.stderr[-2000:]
    with open(tmp_path / 'FRSR' / 'babyx4.png', 'rb') as f:
        assert got == f.read()
    t = time.time()
    info, error = run(page)                     # the same model again: built once, kept
    TIMES['second request, same model, s'] = round(time.time() - t, 2)
    assert error is None and download(page) == got
    page.mouse.wheel(0, 0)
    page.screenshot(path=artifact('app.png'), full_page=True)


def test_the_dial_changes_the_output(page):
    upload(page, shared_path('data', 'Set5', 'LR_bicubic', 'X4', 'headx4.png'))
    choose(page, 'NatSR')
    assert page.locator('#dial').is_visible()
    info, error = run(page)
    assert error is None and info.startswith('NatSR x4'), (info, error)
    natsr = download(page)
    set_dial(page, 0.5)
    info, error = run(page)
    assert error is None and info.startswith('NatSR dial 0.5'), (info, error)
    assert download(page) != natsr
    choose(page, 'FRSR_x2')
    page.wait_for_function("() => { const d = document.querySelector('#dial'); return !d || d.offsetParent === null; }")
    page.screenshot(path=artifact('app_dial.png'), full_page=True)


def test_a_text_file_gets_one_line_and_the_page_still_works(page, tmp_path):
    notes = tmp_path / 'notes.png'
    notes.write_text('this is a text file\n')
    upload(page, str(notes))
    choose(page, 'bicubic')
    info, error = run(page)
    assert info is None and error == 'notes.png: cannot read image (not a PNG, JPEG, BMP, TIFF or WebP file)', error
    page.screenshot(path=artifact('app_error.png'), full_page=True)
    upload(page, shared_path('data', 'Set5', 'LR_bicubic', 'X4', 'birdx4.png'))
    info, error = run(page)
    assert error is None and info.startswith('bicubic_x4 x4 in'), (info, error)


def test_zz_only_the_app_was_asked_and_sigterm_ends_it(server):
    """Runs last in the group: every request went to the app's own address; then SIGTERM."""
    assert REQUESTS and all(u.startswith(server.url) for u in REQUESTS), [u for u in REQUESTS
                                                                          if not u.startswith(server.url)]
    with open(artifact('app_timings.json'), 'w') as f:
        json.dump(TIMES, f, indent=1)
    assert os.path.isdir(server.workdir)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 128 + signal.SIGTERM
    assert not os.path.exists(server.workdir) and 'interrupted' in server.output()
