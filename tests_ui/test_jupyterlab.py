"""Browser smoke test of the learner's path (`make test-ui`): JupyterLab started from this environment on
127.0.0.1, driven by a headless Chromium through Playwright.

It opens copies of lesson 00 and exercise 03 (the checkout is never written to), runs all cells through the
menus, and checks what a learner sees: no error output, a figure, a widget with its whole label, the kernel
running from this checkout's environment, the checks' verdicts (with the stub's hint), and a check that
passes once a stub is replaced. A failure leaves a screenshot in tests_ui/screenshots/. Every process it
starts (server, kernels, browser) is stopped, and the test checks that none is left.

Skipped, saying why, where no Chromium is installed (Debian/Ubuntu: `apt-get install chromium`), or set
TFM_CHROMIUM to a Chrome/Chromium binary.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from make_exercises import edited_by_learner  # noqa: E402
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM = os.environ.get("TFM_CHROMIUM") or next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
if not CHROMIUM:
    pytest.skip("UI test skipped: no Chromium found (Debian/Ubuntu: apt-get install chromium; "
                "or set TFM_CHROMIUM=/path/to/chrome)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="UI test skipped: Playwright is not installed "
                               "(pip install -e '.[dev]')")

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--disable-dev-shm-usage"]
ERROR_TEXT = re.compile(r"Traceback \(most recent call last\)|^\s*\w*(Error|Exception): ", re.M)
RUN_TIMEOUT_MS = 240_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_mentioning(marker: str) -> list[int]:
    """Process ids whose command line contains marker (our temporary folder): what we started."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 over a copy of the two notebooks; yields its base URL and token."""
    home = tmp_path_factory.mktemp("tfm-ui")
    root = home / "course"
    for rel in ("notebooks/00_welcome.ipynb", "exercises/03_attention.ipynb"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, root / rel)
    settings = home / "lab-settings" / "@jupyterlab"
    (settings / "notebook-extension").mkdir(parents=True)
    # every cell in the DOM (no windowing), so the test can read all outputs
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_PREFER_ENV_PATH="1", JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTER_CONFIG_DIR=str(home / "config"), HOME=str(home))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(home / "server.log", "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (home / "server.log").read_text()[-3000:])
                time.sleep(0.5)
        yield {"base": base, "token": token, "root": root, "home": home}
    finally:
        try:   # shut the kernels down, then the server (its whole process group)
            request = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(request, timeout=10)
            server.wait(timeout=30)
        except Exception:  # noqa: BLE001
            pass
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()
        for pid in _processes_mentioning(str(home)):   # kernels started in their own sessions, if any survived
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        left = _processes_mentioning(str(home))
        assert not left, f"processes left running: {left}"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{request.node.name}{'-FAILED' if failed else ''}.png"), full_page=True)
    context.close()


def _open(page, lab, rel):
    # a workspace of its own: only this notebook open (no tabs restored from an earlier test)
    workspace = re.sub(r"\W", "-", Path(rel).stem)
    page.goto(f"{lab['base']}/lab/workspaces/{workspace}/tree/{rel}?reset&token={lab['token']}")
    page.locator(".jp-NotebookPanel").wait_for()
    assert page.locator(".jp-NotebookPanel").count() == 1
    page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for()
    # the course's kernel, found in this environment, starts without a "select kernel" dialog
    page.locator(".jp-NotebookPanel-toolbar", has_text="Python (Transformers course)").wait_for()
    page.locator("#jp-main-statusbar", has_text=re.compile(r"Python \(Transformers course\) \| Idle")).wait_for()


def _run_all(page):
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    # done when every code cell shows an execution count and none is waiting ([*])
    page.wait_for_function("""() => {
        const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')]
            .map(e => e.textContent.trim());
        return prompts.length > 0 && prompts.every(t => /^\\[\\d+\\]:$/.test(t));
    }""", timeout=RUN_TIMEOUT_MS, polling=500)


def _save(page, path: Path):
    """Save as a learner does (Ctrl+S in the notebook) and wait until the file on disk changes."""
    before = path.stat().st_mtime_ns
    page.keyboard.press("Control+s")   # JupyterLab's own shortcut, wherever the focus is in the app
    deadline = time.monotonic() + 30
    while path.stat().st_mtime_ns == before:
        assert time.monotonic() < deadline, f"{path.name} was not saved"
        time.sleep(0.2)
    time.sleep(0.5)   # let the write finish


def _outputs_text(page) -> str:
    return "\n".join(page.locator(".jp-Notebook .jp-OutputArea-output").all_inner_texts())


def _assert_no_error_output(page):
    errors = page.locator(".jp-Notebook .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    texts = [t for t in errors.all_inner_texts() if ERROR_TEXT.search(t)]
    match = ERROR_TEXT.search(_outputs_text(page))
    assert not texts and not match, f"error output: {texts or match.group(0)}"


def test_lesson_00_runs_all_with_a_figure_a_widget_and_this_environments_kernel(page, lab):
    _open(page, lab, "notebooks/00_welcome.ipynb")
    _run_all(page)
    _assert_no_error_output(page)
    text = _outputs_text(page)
    assert f"environment: {sys.prefix}" in text, "lesson 00's kernel does not run from this checkout's .venv"
    figure = page.locator(".jp-Notebook .jp-RenderedImage img").first
    figure.wait_for()
    assert page.evaluate("img => img.naturalWidth > 100 && img.naturalWidth <= 860", figure.element_handle())
    slider = page.locator(".jp-Notebook .widget-slider").first
    slider.wait_for(state="visible")
    label = page.locator(".jp-Notebook .widget-slider .widget-label", has_text="angle (degrees)").first
    assert label.is_visible() and label.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), \
        "the slider's label is cut off"
    # the interact figure is drawn under the sliders
    assert page.locator(".jp-Notebook .widget-interact .jp-RenderedImage img, "
                        ".jp-Notebook .jupyter-widgets-output-area img").count() >= 1
    slider.scroll_into_view_if_needed()   # what the screenshot shows


SOFTMAX = ("def softmax(scores):\n"
           "    shifted = scores - scores.max(dim=-1, keepdim=True).values\n"
           "    e = shifted.exp()\n"
           "    return e / e.sum(dim=-1, keepdim=True)\n")


def test_exercise_03_verdicts_then_a_passing_check(page, lab):
    _open(page, lab, "exercises/03_attention.ipynb")
    _run_all(page)
    _assert_no_error_output(page)
    text = _outputs_text(page)
    assert text.count("not implemented yet") >= 4, text[-2000:]
    assert "Hint: Subtract each row's max" in text, "the verdict does not repeat the stub's hint"
    assert "✅" not in text and "❌" not in text
    saved = lab["root"] / "exercises" / "03_attention.ipynb"
    _save(page, saved)
    assert not edited_by_learner(saved), "a notebook only run and saved in JupyterLab counts as edited"

    # a learner fills the first stub and runs it, then its check
    stub_cell = page.locator(".jp-Notebook .jp-CodeCell", has_text="def softmax(scores)").first
    stub_cell.locator(".cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(SOFTMAX)
    page.keyboard.press("Shift+Enter")   # runs the definition, moves to the check cell
    page.keyboard.press("Shift+Enter")   # runs the check
    check_cell = page.locator(".jp-Notebook .jp-CodeCell", has_text="check_softmax(softmax)").last
    check_cell.locator(".jp-OutputArea-output", has_text="✅ softmax").wait_for(timeout=60_000)
    _assert_no_error_output(page)
    _save(page, saved)
    assert edited_by_learner(saved), "make exercises would not recognise the learner's edit"
    page.locator(".jp-Notebook .jp-OutputArea-output", has_text="attention_scores: not implemented yet") \
        .first.scroll_into_view_if_needed()   # what the screenshot shows
