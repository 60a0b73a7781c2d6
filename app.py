"""Super-resolve photos in the browser: a local web page (Gradio) over test.py's job.

    python app.py                        # http://127.0.0.1:7860, this machine only
    python app.py --port 8080 --max_file_size 20mb
    python app.py --host 0.0.0.0         # share on the network: read docs/app.md first

Drop, paste or pick an image (PNG, JPEG, BMP, TIFF, WebP; gray, RGBA, 16-bit and CMYK are read as
test.py reads them), choose the model (NatSR, FRSR, FRSR_x2, FRSR_x3, FRSR_jpeg, bicubic) and, for NatSR, the
perception-distortion dial (test.py --blend: 0 = FRSR, 1 = NatSR). The result is test.py's: each
request runs `test.py --datapath <the upload's folder> --model ... [--blend A] --save 1` through
the same code (natsr/inference: job.plan, upscaler, pipeline), with the networks built once per
model and kept. It shows beside the input in a before / after slider, with a zoomed crop; the PNG
to download is the file test.py writes (alpha and 16 bits kept).

Private by default: bound to 127.0.0.1, no share link, no analytics, no fonts or scripts from
outside; the uploads and results live in one temporary folder of this process, the only one it
serves, removed on exit. One job runs at a time; the others wait in a queue (their place is shown).

Exit status (natsr/process/exits.py): 2 bad arguments or Gradio missing (one line); 130 after Ctrl-C,
143 after SIGTERM, the temporary folder removed.
"""
import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

from natsr.checkpoints import JPEG_ROBUST, MODEL_SCALES
from natsr.process import exits

MODELS = tuple(MODEL_SCALES) + ('bicubic',)
DIAL_MODEL = 'NatSR'                 # the model the dial applies to (its ends: FRSR and NatSR)
CROP = 48                            # side of the zoomed crop, in output pixels before magnifying
# Set before Gradio is imported: no analytics, no version check, no share tunnel, nothing fetched.
OFFLINE_ENV = {
    'GRADIO_ANALYTICS_ENABLED': 'False', 'GRADIO_SHARE': 'False', 'GRADIO_SSR_MODE': 'False',
    'GRADIO_MCP_SERVER': 'False', 'GRADIO_HOT_RELOAD': 'False', 'GRADIO_RUN_HISTORY': 'False',
    'HF_HUB_OFFLINE': '1', 'HF_HUB_DISABLE_TELEMETRY': '1', 'HF_HUB_DISABLE_IMPLICIT_TOKEN': '1',
    'DO_NOT_TRACK': '1',
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='A local web page that super-resolves photos with NatSR / FRSR.')
    p.add_argument('--host', default='127.0.0.1',
                   help='address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network '
                        'this machine is on, see docs/app.md)')
    p.add_argument('--port', type=int, default=7860, help='port (default 7860)')
    p.add_argument('--modelpath', default='Model', help='checkpoint folder (default: Model)')
    p.add_argument('--max_file_size', default='50mb',
                   help='largest upload (default 50mb; Gradio\'s units: kb, mb, gb)')
    p.add_argument('--precision', default='fp32', help='arithmetic of the networks, as test.py --precision')
    p.add_argument('--verbose', action='store_true', help="keep TensorFlow's and Gradio's own log output")
    return p.parse_args(argv)


class Runner(object):
    """test.py's job on one uploaded file at a time, in `workdir`: the networks (sr.Generator) are
    built on their first request and kept for the next ones (upscaler.make's cache)."""

    def __init__(self, workdir, modelpath='Model', precision='fp32'):
        self.workdir, self.modelpath, self.precision = workdir, modelpath, precision
        self.cache = {}
        self.count = 0
        self.lock = threading.Lock()

    def command(self, folder, model, dial, savepath):
        """test.py's command line for this request: the result is the file it writes."""
        argv = ['--datapath', folder, '--model', model, '--modelpath', self.modelpath, '--save', '1',
                '--savepath', savepath, '--precision', self.precision]
        if model == DIAL_MODEL and dial is not None and float(dial) < 1.0:
            argv += ['--blend', '%g' % float(dial)]
        return argv

    def run(self, upload, model, dial=None, progress=None):
        """(result PNG path, LR image, result image, one info line) of the image file `upload`;
        ValueError with test.py's one-line message (the upload named by its file name) otherwise.
        `progress(fraction, text)`: the tiles done."""
        import test as script   # the command's parser: the same options and defaults as test.py's
        import utils
        from natsr.inference import job as jobs
        from natsr.inference import pipeline, upscaler
        name = os.path.basename(upload)
        with self.lock:
            self.count += 1
            folder = os.path.join(self.workdir, 'job%d' % self.count)
            os.makedirs(os.path.join(folder, 'in'))
            path = os.path.join(folder, 'in', name if name.lower().endswith(utils.IMAGE_EXTS) else name + '.png')
            shutil.copyfile(upload, path)

            def line(text):   # the message as test.py says it, the upload named by its own name
                return str(text).replace(path, name).replace(os.path.join(folder, 'in'), name)
            try:
                job = jobs.plan(script.parse_args(self.command(os.path.join(folder, 'in'), model, dial,
                                                               os.path.join(folder, 'out'))))
                up = upscaler.make(job, cache=self.cache)
            except exits.UsageError as e:
                raise ValueError(line(e))
            passes = max(1, len(up.gens))
            for i, gen in enumerate(up.gens):
                gen.progress = (None if progress is None else
                                lambda done, total, i=i: progress((i + done / total) / passes,
                                                                  'tile %d of %d' % (done, total)))
            t = time.time()
            tally = pipeline.Pipeline(job, up).run()
            seconds = time.time() - t
            for gen in up.gens:
                gen.progress = None
            if tally.errors or tally.stop:
                raise ValueError(line(tally.errors[0] if tally.errors else tally.stop))
            out = os.path.join(job.outdir, utils.stem(path) + '.png')
            return out, utils.read_image(path, checked=True), utils.read_image(out), self.info(job, up, seconds)

    def info(self, job, up, seconds):
        """One line: the model, the time, the tiling and memory plan."""
        gen = up.gen
        what = job.folder if job.blend is None else 'NatSR dial %g (FRSR + NatSR outputs)' % job.blend.alpha
        if gen is None:
            return '%s x%d in %.2f s (MATLAB bicubic, numpy)' % (what, job.scale, seconds)
        tiles = 'whole image' if not up.last_tile else 'tiles of %d LR pixels + %d of context' % (up.last_tile,
                                                                                                   gen.margin)
        per_pixel = gen.per_pixel or gen.prior
        line = ('%s x%d in %.2f s on %s, %s; memory: %.1f GB for the network, %.1f KB per LR pixel (%s)'
                % (what, job.scale, seconds, gen.device, tiles, gen.memory_budget() / 2.0 ** 30, per_pixel / 1024.0,
                   gen.per_pixel_source or 'prior'))
        if job.jpeg_note():     # test.py's note, for the page: the model that suits a JPEG upload
            line += ' · a JPEG of quality %d: %s keeps more of its gain on it' % (
                job.items[0].jpeg_quality, JPEG_ROBUST[job.model])
        return line


def display(img):
    """8-bit RGB(A) of an image for the browser (the download keeps its 16 bits)."""
    import utils
    img = utils.to_uint8(img)
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img


def views(lr, out, scale):
    """(input enlarged to the result's size with bicubic, the result, a zoomed crop: input | result
    side by side, nearest-neighbour magnified) for the page."""
    from PIL import Image
    before = Image.fromarray(display(lr)).resize((out.shape[1], out.shape[0]), Image.BICUBIC)
    after = Image.fromarray(display(out))
    gray = display(out)[:, :, :3].mean(axis=2)
    side = min(CROP * scale // 4 * 4 or CROP, out.shape[0], out.shape[1])
    best, at = -1.0, (0, 0)
    for y in range(0, out.shape[0] - side + 1, max(1, side // 2)):   # the most detailed crop
        for x in range(0, out.shape[1] - side + 1, max(1, side // 2)):
            detail = float(gray[y:y + side, x:x + side].std())
            if detail > best:
                best, at = detail, (y, x)
    y, x = at
    zoom = max(1, 256 // side)
    crops = [im.crop((x, y, x + side, y + side)).resize((side * zoom, side * zoom), Image.NEAREST)
             for im in (before.convert(after.mode), after)]
    pair = Image.new(after.mode, (2 * side * zoom + 8, side * zoom), 'white')
    pair.paste(crops[0], (0, 0))
    pair.paste(crops[1], (side * zoom + 8, 0))
    return before, after, pair


def page(runner, max_file_size):
    """The Gradio page: upload, model, dial, run; slider, crop, info line, download."""
    import gradio as gr

    def run(upload, model, dial, progress=gr.Progress()):
        if not upload:
            raise gr.Error('no image: drop, paste or pick one first', print_exception=False)
        progress(0.0, desc='starting')
        try:
            out, lr, sr, info = runner.run(upload, model, dial,
                                           progress=lambda f, text: progress(f, desc=text))
        except ValueError as e:
            raise gr.Error(str(e), print_exception=False) from None
        before, after, pair = views(lr, sr, MODEL_SCALES.get(model, 4))
        return (before, after), pair, info, gr.update(value=out, interactive=True)

    theme = gr.themes.Default(font=['system-ui', 'Segoe UI', 'Roboto', 'Helvetica', 'Arial', 'sans-serif'],
                              font_mono=['ui-monospace', 'Menlo', 'Consolas', 'DejaVu Sans Mono', 'monospace'])
    with gr.Blocks(title='NatSR super-resolution', analytics_enabled=False) as demo:
        gr.Markdown('## NatSR super-resolution\nEverything runs on this machine; uploads (at most %s) and '
                    'results are deleted when the app stops.' % max_file_size)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300):
                upload = gr.File(label='Image: drop, paste or click (PNG, JPEG, BMP, TIFF, WebP)', type='filepath',
                                 file_count='single', elem_id='upload')
                model = gr.Dropdown(list(MODELS), value=DIAL_MODEL, label='Model', elem_id='model',
                                    info='NatSR: natural texture, x4 · FRSR: fidelity, x4 / x2 / x3 · FRSR_jpeg: '
                                         'JPEG photos, x4 · bicubic: the baseline, x4')
                dial = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label='Perception-distortion dial',
                                 info='0 = FRSR (fidelity) ... 1 = NatSR (texture)', elem_id='dial')
                go = gr.Button('Super-resolve', variant='primary', elem_id='run')
                info = gr.Textbox(label='Time, tiling and memory', interactive=False, elem_id='info')
                download = gr.DownloadButton('Download PNG', interactive=False, elem_id='download')
            with gr.Column(scale=3, min_width=400):
                slider = gr.ImageSlider(label='Input (bicubic) | result', type='pil', interactive=False,
                                        elem_id='slider')
                crop = gr.Image(label='Zoomed crop: input | result', type='pil', interactive=False, elem_id='crop')
        model.change(lambda m: gr.update(visible=m == DIAL_MODEL), model, dial, queue=False)
        go.click(run, [upload, model, dial], [slider, crop, info, download], concurrency_limit=1,
                 concurrency_id='super-resolve')
    demo.queue(default_concurrency_limit=1, max_size=32)
    return demo, theme


def serve(args, workdir):
    import importlib.util
    if importlib.util.find_spec('gradio') is None:
        raise exits.UsageError('the web page needs Gradio: pip install --no-deps -r requirements/app.txt')
    os.environ.update(OFFLINE_ENV)
    os.environ['GRADIO_TEMP_DIR'] = workdir     # uploads and served files: this folder only
    from natsr.process import tflog
    tflog.init(args.verbose, graph=False)
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')   # as test.py
    runner = Runner(workdir, args.modelpath, args.precision)
    demo, theme = page(runner, args.max_file_size)
    demo.launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False,
                prevent_thread_lock=True, quiet=not args.verbose, show_error=True,
                max_file_size=args.max_file_size, allowed_paths=[workdir], ssr_mode=False, pwa=False,
                mcp_server=False, enable_monitoring=False, footer_links=[], theme=theme)
    print('serving http://%s:%d/ (temporary folder %s; Ctrl-C stops)' % (args.host, args.port, workdir), flush=True)
    try:
        while True:
            time.sleep(0.5)
    finally:
        demo.close()


def main(argv=None):
    args = parse_args(argv)
    workdir = os.path.realpath(tempfile.mkdtemp(prefix='natsr-app-'))
    try:
        return exits.main(lambda: serve(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
