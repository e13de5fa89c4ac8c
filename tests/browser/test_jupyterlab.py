"""The kit where its users use it: the quickstart in JupyterLab, driven through a real Chromium.

Starts JupyterLab on 127.0.0.1 with a token, opens ``00_quickstart`` (its parameters made small),
runs all cells, waits for the panels to render, presses the training panel's Start button and
waits until the live chart shows that run's losses. The screenshots land in the test's tmp_path
and in ``tests/browser/output/``.

The lab extension's tests (at the end) open the "Fine-tuning runs" sidebar while a notebook
trains, watch its sparkline grow between two polls, stop the run from it, open its report, and
use its "Insert load_run" and "Compare selected" actions and the launcher's cards; the sidebar's
picture also goes to ``docs/images/labextension-sidebar.png`` for the README when
``FTKIT_UPDATE_DOCS_IMAGES=1`` is set.

Uses Debian's Chromium (``apt-get install -y chromium``; ``.ci/run`` installs it) through
Playwright's Python package, never a browser Playwright downloads. Without Chromium the test
skips locally and fails in CI (``CI`` set), so CI never skips it silently.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = Path(__file__).resolve().parent / "output"
CHROMIUM = Path("/usr/bin/chromium")
# Background networking must be off: on a closed network Chromium's update and sync requests are
# refused, and without these flags it stalls on them.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# A short run: two training steps, a few rows, so the whole notebook runs in a few minutes.
PARAMETERS = dict(TEST_SIZE=0.05, TRAIN_ROWS=16, EVAL_ROWS=8, K_SHOTS=2, SFT_MINUTES=0, SFT_STEPS=2,
                  BATCH_SIZE=4)
MINUTE_MS = 60_000


def _require(what: str, ok: bool, how: str) -> None:
    """Skip locally, fail in CI: a browser check that silently skips in CI checks nothing."""
    if ok:
        return
    message = f"{what} is missing: {how}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set, so this test may not be skipped)")
    pytest.skip(message)


def _playwright():
    """Playwright's sync API, once Debian's Chromium and the package are there (else skip or fail)."""
    _require(f"Chromium ({CHROMIUM})", CHROMIUM.exists(),
             "install Debian's Chromium with `sudo apt-get install -y chromium` (.ci/run does this)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require("Playwright's Python package", False, "pip install -e '.[dev]' (make setup does this)")
    return sync_playwright


def _folders(base: Path) -> tuple[Path, Path, Path]:
    """The notebooks JupyterLab serves, the runs folder and a HOME, under ``base``."""
    folders = base / "notebooks", base / "runs", base / "home"
    for folder in folders:
        folder.mkdir()
    return folders


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _small_quickstart(folder: Path, runs: Path) -> Path:
    nb = nbformat.read(ROOT / "notebooks" / "00_quickstart.ipynb", as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    values = {**PARAMETERS, "RUNS_ROOT": str(runs)}
    cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, cell)
    path = folder / "00_quickstart.ipynb"
    nbformat.write(nb, path)
    return path


class Lab:
    """A JupyterLab server in a subprocess, with its own config, settings and workspace folders."""

    def __init__(self, root: Path, home: Path, env: dict):
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        settings = home / "settings"
        # No news or update checks: the machine may have no network, and the toast would cover
        # the panels in the screenshot.
        notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        notification.parent.mkdir(parents=True)
        notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = {**env, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
               "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
        self.log = home / "jupyterlab.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--LabApp.extension_manager=readonly",  # the pypi one queries pypi.org
             # Containers and CI runners often run as root; JupyterLab refuses that by default.
             *(["--allow-root"] if os.geteuid() == 0 else [])],
            cwd=root, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"JupyterLab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.api("/api/status")
                return
            except OSError:
                time.sleep(1)
        raise AssertionError(f"JupyterLab did not answer /api/status in {timeout_s} s:\n{self.log_tail()}")

    def kernels_idle(self) -> bool:
        kernels = self.api("/api/kernels")
        return bool(kernels) and all(k["execution_state"] == "idle" for k in kernels)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        try:
            self.api("/api/shutdown", method="POST")  # shuts the kernels down too
            self.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001 - a server that will not stop is ended below
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=30)


def _poll(what: str, check, timeout_s: float, lab: Lab, every_s: float = 2.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n"
                         f"JupyterLab log:\n{lab.log_tail()}")


# The plotly graph div keeps its figure's data; the train panel's loss trace is named "train loss".
LOSS_POINTS_JS = """() => {
  const gd = document.querySelector('.ftkit-train-panel .ftkit-train-chart .js-plotly-plot');
  if (!gd || !gd.data) return null;
  const trace = gd.data.find(t => t.name === 'train loss');
  return {y: trace ? Array.from(trace.y || []) : [],
          markers: gd.querySelectorAll('.scatterlayer .trace .point').length};
}"""


def test_quickstart_in_jupyterlab_trains_from_the_panel_button(tmp_path):
    sync_playwright = _playwright()
    root, runs, home = _folders(tmp_path)
    _small_quickstart(root, runs)
    lab = Lab(root, home, {**os.environ, "FTKIT_RUNS": str(runs)})
    try:
        lab.wait_ready()
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(home / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 1800})  # the whole training panel fits
            try:
                page = browser.pages[0] if browser.pages else browser.new_page()
                _drive(page, lab, runs, tmp_path)
            finally:
                browser.close()
    finally:
        lab.stop()


def _drive(page, lab: Lab, runs: Path, tmp_path: Path) -> None:
    page.goto(f"{lab.url}/lab/tree/00_quickstart.ipynb?token={lab.token}", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=2 * MINUTE_MS)
    _poll("the kernel to start", lab.kernels_idle, 120, lab)

    page.click(".jp-NotebookPanel .jp-Cell")  # the notebook is the current widget for Run All
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-item[data-command='runmenu:run-all']")  # Run > Run All Cells

    # The panels render as widgets, not as "Loading widget..." or a text repr: their CSS classes
    # only exist in the DOM when the widget manager has drawn them.
    page.wait_for_selector(".ftkit-data-panel", state="visible", timeout=5 * MINUTE_MS)
    page.wait_for_selector(".ftkit-train-panel .ftkit-start", state="visible", timeout=10 * MINUTE_MS)
    page.wait_for_selector(".ftkit-train-panel .ftkit-train-chart .js-plotly-plot", timeout=2 * MINUTE_MS)
    page.wait_for_selector(".ftkit-compare-panel", state="attached", timeout=15 * MINUTE_MS)
    _poll("Run All to finish", lambda: lab.kernels_idle() and not _busy_prompts(page), 15 * 60, lab)
    prompts = page.eval_on_selector_all(".jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent)")
    assert prompts and all(p.strip().strip("[]:").isdigit() for p in prompts), \
        f"not every cell ran (a cell failed?): prompts {prompts}"
    assert page.locator(".ftkit-prompt-lab").count() == 1

    before = {p.name for p in runs.iterdir() if p.is_dir()}
    start = page.locator(".ftkit-train-panel .ftkit-start")
    start.scroll_into_view_if_needed()
    start.click()
    new_run = _poll("the Start button to create a run", lambda: next(
        (p for p in runs.iterdir() if p.is_dir() and p.name not in before), None), 120, lab)
    status = new_run / "status.json"
    _poll(f"run {new_run.name} to end", lambda: status.exists() and
          json.loads(status.read_text())["status"] != "running", 8 * 60, lab)
    assert json.loads(status.read_text())["status"] == "completed", status.read_text()
    losses = [json.loads(line)["loss"] for line in (new_run / "events.jsonl").read_text().splitlines()
              if json.loads(line).get("event") == "log" and "loss" in json.loads(line)]
    assert losses, "the run logged no loss"

    def chart_shows_this_run():
        points = page.evaluate(LOSS_POINTS_JS)
        return points if points and points["markers"] > 0 and len(points["y"]) == len(losses) and \
            all(abs(a - b) < 1e-6 for a, b in zip(points["y"], losses)) else None

    points = _poll("the live chart to show the new run's losses", chart_shows_this_run, 60, lab, every_s=1)
    chart = page.locator(".ftkit-train-panel .ftkit-train-chart")
    chart.scroll_into_view_if_needed()
    page.wait_for_timeout(1000)  # let plotly finish its transition before the picture
    OUTPUT.mkdir(exist_ok=True)
    shots = (("jupyterlab.png", page.screenshot), ("train_panel.png", page.locator(".ftkit-train-panel").screenshot),
             ("train_chart.png", chart.screenshot))
    for name, shoot in shots:
        shoot(path=str(tmp_path / name))
        shutil.copy(tmp_path / name, OUTPUT / name)
    print(f"chart: {len(points['y'])} losses, {points['markers']} markers; screenshots in {OUTPUT}")


def _busy_prompts(page) -> bool:
    """True while a cell waits or runs: JupyterLab shows ``[*]`` in its prompt."""
    return page.eval_on_selector_all(".jp-CodeCell .jp-InputPrompt",
                                     "els => els.some(e => e.textContent.includes('*'))")


# The chat playground on the embedded model, with one run. The run's adapter is PEFT's LoRA with
# small random B matrices instead of a training run (seconds instead of minutes): its answers
# differ from the base model's, which is all a side-by-side needs to show.
CHAT_CELL = """\
import copy

import torch
from peft import LoraConfig, get_peft_model

from ftkit import load_model
from ftkit.runs import new_run
from ftkit.widgets.chat_panel import ChatPanel

model, tokenizer = load_model(verbose=False)  # the embedded SmolLM2-135M-Instruct
run = new_run("chat-browser", {{"kind": "sft", "base_model": "smollm2-135m-instruct"}}, root={runs!r})
torch.manual_seed(0)
tuned = get_peft_model(copy.deepcopy(model), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
with torch.no_grad():
    for name, p in tuned.named_parameters():
        if "lora_B" in name:
            p.normal_(0.0, 0.02)
tuned.save_pretrained(run.adapter_dir)
tokenizer.save_pretrained(run.adapter_dir)
run.set_status("completed")
chat = ChatPanel(model, tokenizer, runs=[run], max_new_tokens=40)
chat
"""
# Each column's answers as the browser shows them, in column order.
CHAT_ANSWERS_JS = """() => Array.from(document.querySelectorAll('.ftkit-chat-panel .ftkit-chat-column')).map(
  col => Array.from(col.querySelectorAll('.ftkit-chat-answer')).map(a => a.innerText.trim()))"""


def test_chat_panel_in_jupyterlab_streams_two_columns(tmp_path):
    sync_playwright = _playwright()
    root, runs, home = _folders(tmp_path)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CHAT_CELL.format(runs=str(runs)))])
    # Without a kernelspec JupyterLab asks which kernel to start, and none starts.
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(nb, root / "chat.ipynb")
    lab = Lab(root, home, {**os.environ, "FTKIT_RUNS": str(runs)})
    try:
        lab.wait_ready()
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(home / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 1000})
            try:
                page = browser.pages[0] if browser.pages else browser.new_page()
                _chat(page, lab, tmp_path)
            finally:
                browser.close()
    finally:
        lab.stop()


def _chat(page, lab: Lab, tmp_path: Path) -> None:
    def idle() -> bool:
        # Asked while a kernel starts, jupyter_server may answer 500 (its kernel has no
        # last_activity yet): that is "not idle yet", not a failure.
        try:
            return lab.kernels_idle()
        except urllib.error.HTTPError as err:
            if err.code == 500:
                return False
            raise

    page.goto(f"{lab.url}/lab/tree/chat.ipynb?token={lab.token}", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=2 * MINUTE_MS)
    _poll("the kernel to start", idle, 120, lab)
    page.click(".jp-NotebookPanel .jp-Cell")
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-item[data-command='runmenu:run-all']")
    page.wait_for_selector(".ftkit-chat-panel .ftkit-chat-send", state="visible", timeout=5 * MINUTE_MS)
    _poll("the cell to finish", lambda: idle() and not _busy_prompts(page), 120, lab)
    assert page.locator(".ftkit-chat-panel .ftkit-chat-column").count() == 2
    assert not page.locator(".ftkit-chat-panel .ftkit-error").count(), "the panel shows a warning or an error"

    page.fill(".ftkit-chat-panel .ftkit-chat-input input", "Hello! What can you do?")
    page.click(".ftkit-chat-panel .ftkit-chat-send")
    # Poll the DOM while the kernel streams: a column's text is seen growing (with the cursor
    # the panel shows while it streams) before it is final.
    seen: list[list[list[str]]] = []
    deadline = time.monotonic() + 3 * 60

    def final(answers) -> bool:
        return len(answers) == 2 and all(len(a) == 1 and a[0] and "▌" not in a[0] and "waiting" not in a[0]
                                         for a in answers)

    while time.monotonic() < deadline:
        answers = page.evaluate(CHAT_ANSWERS_JS)
        if not seen or answers != seen[-1]:
            seen.append(answers)
        if final(answers):
            break
        page.wait_for_timeout(30)
    else:
        raise AssertionError(f"the answers did not finish in 3 minutes; last seen: {seen[-1:]}\n{lab.log_tail()}")
    finals = [a[0] for a in seen[-1]]
    assert finals[0] != finals[1], finals  # the run's adapter changes the answer
    grew = [(col, snapshot[col][0]) for snapshot in seen[:-1] for col in (0, 1)
            if snapshot[col] and "▌" in snapshot[col][0]
            and finals[col].startswith(partial := snapshot[col][0].replace("▌", "").strip()) and partial
            and len(partial) < len(finals[col])]
    assert grew, f"no answer was seen part-way through streaming; snapshots: {seen}"
    _poll("the kernel to be idle after answering", idle, 60, lab, every_s=1)
    OUTPUT.mkdir(exist_ok=True)
    panel = page.locator(".ftkit-chat-panel")
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(tmp_path / "chat_panel.png"))
    shutil.copy(tmp_path / "chat_panel.png", OUTPUT / "chat_panel.png")
    print(f"{len(seen)} distinct DOM states; streamed part-way: {len(grew)}; answers: {finals}")


# --- the lab extension: the "Fine-tuning runs" sidebar and the launcher cards -------------------
#
# One JupyterLab and one Chromium for the tests below (module scope). A notebook trains two runs
# of the tiny model: a short one, evaluated, then a long one (100 000 steps, each logged step
# slowed to about 4 a second) in a thread, so the kernel is free and the sidebar sees it running.
# Trainer output is sent to /dev/null: a line per step would flood the notebook.

TRAIN_CELL = """\
import contextlib, os, threading, time

from ftkit import load_model
from ftkit.evaluation.evaluate import Variant, evaluate
from ftkit.training.events import EventBus
from ftkit.prompts import zero_shot
from ftkit.training.sft import SFTSettings, train_sft

RUNS = {runs!r}
model, tok = load_model({tiny!r}, device="cpu", dtype="float32", verbose=False)
rows = [{{"prompt": p, "completion": c}} for p, c in [
    ("Where is my order?", "order_status"), ("I was charged twice", "billing"),
    ("Reset my password", "account"), ("Change the delivery address", "address")]] * 4
short = dict(batch_size=4, logging_steps=1, save_steps=1000, learning_rate=1e-2)

def quietly(fn, *args, **kwargs):
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        return fn(*args, **kwargs)

done = quietly(train_sft, model, tok, rows, config=SFTSettings(name="support-sft", max_steps=12, **short), runs_root=RUNS)
done.record_evaluation(quietly(evaluate, [Variant(done.model, tok, zero_shot(), name=done.id, max_new_tokens=4)],
                               rows[:4], progress=False))
bus = EventBus()
bus.on("log", lambda e: time.sleep(0.25))
print("finished", done.id, "; starting the long run")
threading.Thread(target=quietly, args=(train_sft, model, tok, rows), daemon=True, kwargs=dict(
    config=SFTSettings(name="support-sft-long", max_steps=100_000, **short), bus=bus, runs_root=RUNS)).start()
"""
DOCS_IMAGES = ROOT / "docs" / "images"
SIDEBAR_TAB = '.lm-TabBar-tab[data-id="ftkit-runs-sidebar"]'
# The running row's sparkline as the page shows it: what the last poll brought.
SPARK_JS = """() => {
  const row = document.querySelector('.ftkit-run[data-status="running"]');
  const svg = row && row.querySelector('svg.ftkit-sparkline');
  return svg ? {id: row.dataset.runId, points: +svg.dataset.points, last: +svg.dataset.lastStep,
                d: svg.querySelector('path').getAttribute('d')} : null;
}"""


@pytest.fixture(scope="module")
def ext_lab(tmp_path_factory, tiny_model_dir):
    """JupyterLab (with the installed extension) on a folder holding train.ipynb, and a page."""
    sync_playwright = _playwright()
    base = tmp_path_factory.mktemp("labextension")
    root, runs, home = _folders(base)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        TRAIN_CELL.format(runs=str(runs), tiny=str(tiny_model_dir)))])
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(nb, root / "train.ipynb")
    lab = Lab(root, home, {**os.environ, "FTKIT_RUNS": str(runs)})
    try:
        lab.wait_ready()
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(home / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 900}, device_scale_factor=2)  # a sharp picture for the README
            try:
                page = browser.pages[0] if browser.pages else browser.new_page()
                yield SimpleNamespace(lab=lab, page=page, root=root, runs=runs, tmp=base)
            finally:
                browser.close()
    finally:
        lab.stop()


def _idle(lab: Lab) -> bool:
    try:  # asked while a kernel starts, jupyter_server may answer 500: not idle yet
        return lab.kernels_idle()
    except urllib.error.HTTPError as err:
        if err.code == 500:
            return False
        raise


def _shot(name: str, shoot) -> Path:
    OUTPUT.mkdir(exist_ok=True)
    shoot(path=str(OUTPUT / name))
    return OUTPUT / name


def _launcher_card(page, label: str):
    page.click(".lm-MenuBar-itemLabel:text-is('File')")
    page.click(".lm-Menu-item[data-command='launcher:create']")
    card = page.locator('.jp-LauncherCard[data-category="ftkit"]').filter(has_text=re.compile(f"^{re.escape(label)}$"))
    card.wait_for(state="visible", timeout=30_000)
    return card


def _tab(page, label: str):
    return page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab").filter(
        has=page.locator(f".lm-TabBar-tabLabel:text-is('{label}')"))


def test_runs_sidebar_shows_a_live_run_stops_it_and_opens_its_report(ext_lab):
    lab, page, root, runs = ext_lab.lab, ext_lab.page, ext_lab.root, ext_lab.runs
    page.goto(f"{lab.url}/lab/tree/train.ipynb?token={lab.token}", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=2 * MINUTE_MS)
    page.click(SIDEBAR_TAB)  # the sidebar polls while it is shown
    page.wait_for_selector(".ftkit-runs-sidebar .ftkit-runs-status", state="attached", timeout=30_000)
    _poll("the kernel to start", lambda: _idle(lab), 120, lab)
    page.click(".jp-NotebookPanel .jp-Cell")
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-item[data-command='runmenu:run-all']")

    # Both runs appear without a reload: the finished one with its metric, the live one running.
    # The short run is itself "running" first (on a loaded machine for minutes): wait for it to
    # finish, then for the long one.
    page.wait_for_selector('.ftkit-run[data-status="completed"]', timeout=6 * MINUTE_MS)
    page.wait_for_selector('.ftkit-run[data-status="running"]', timeout=4 * MINUTE_MS)
    done = page.locator('.ftkit-run[data-status="completed"]')
    assert done.count() == 1, page.inner_text(".ftkit-runs-sidebar")
    assert done.locator(".ftkit-run-metric").inner_text().startswith("exact_match "), done.inner_text()
    assert done.locator(".ftkit-run-progress").inner_text() == "step 12 / 12"
    live = page.locator('.ftkit-run[data-status="running"]')
    assert live.locator(".ftkit-badge").inner_text() == "running"
    assert live.locator(".ftkit-stop").is_enabled() and done.locator(".ftkit-stop").is_disabled()

    # The sparkline grows between two polls (every 2 s while a run is running).
    first = _poll("the live run's sparkline to show a loss",
                  lambda: (s := page.evaluate(SPARK_JS)) and s["points"] >= 2 and s, 60, lab, every_s=0.5)
    grown = _poll("the sparkline to grow at the next poll",
                  lambda: (s := page.evaluate(SPARK_JS)) and s["last"] > first["last"] and s, 10, lab, every_s=0.5)
    assert grown["d"] != first["d"] and grown["id"] == first["id"]
    assert live.locator(".ftkit-run-progress").inner_text().startswith("step ")

    # The picture for the README: the sidebar down to its last line, with both runs.
    page.wait_for_timeout(300)
    top = page.locator(".ftkit-runs-sidebar").bounding_box()
    bottom = page.locator(".ftkit-runs-where").bounding_box()
    clip = {"x": top["x"], "y": top["y"], "width": top["width"], "height": bottom["y"] + bottom["height"] + 6 - top["y"]}
    sidebar_png = _shot("labextension-sidebar.png", lambda path: page.screenshot(path=path, clip=clip))
    if os.environ.get("FTKIT_UPDATE_DOCS_IMAGES"):  # a test run never changes the tree unless asked
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copy(sidebar_png, DOCS_IMAGES / "labextension-sidebar.png")

    # Insert load_run: a new cell below the active one in the notebook, with the run's id.
    live_id = first["id"]
    cells_before = page.locator(".jp-NotebookPanel .jp-Cell").count()
    live.locator(".ftkit-insert-load-run").click()
    _poll("the load_run cell", lambda: page.locator(".jp-NotebookPanel .jp-Cell").count() == cells_before + 1, 10, lab,
          every_s=0.5)
    inserted = page.locator(".jp-NotebookPanel .jp-Cell").nth(cells_before).locator(".cm-content").inner_text()
    assert inserted == f'from ftkit.runs import load_run\nrun = load_run("{live_id}")', inserted

    # Stop: the server writes the request, the trainer ends after its step, the next poll says so.
    live.locator(".ftkit-stop").click()
    stopped = page.locator(f'.ftkit-run[data-run-id="{live_id}"][data-status="stopped"]')
    stopped.wait_for(timeout=60_000)
    assert stopped.locator(".ftkit-badge").inner_text() == "stopped"
    assert stopped.locator(".ftkit-stop").is_disabled()
    status = json.loads((runs / live_id / "status.json").read_text())
    assert status["status"] == "stopped" and "JupyterLab" in status["stop_request"]["by"], status

    # Open report: a tab whose sandboxed frame draws the report's plotly charts (scripts allowed there).
    stopped.locator(".ftkit-open-report").click()
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab").filter(has_text="Report: support-sft-long")
    tab.wait_for(timeout=30_000)
    frame = page.locator(".ftkit-report-frame:visible")
    frame.wait_for(timeout=30_000)
    assert frame.get_attribute("sandbox") == "allow-scripts"
    _poll("the report page in the tab", lambda: live_id in (frame.get_attribute("srcdoc") or ""), 60, lab, every_s=1)
    page.frame_locator(".ftkit-report-frame:visible").locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    _shot("labextension-report.png", page.screenshot)

    # Compare selected: a notebook in the current folder that loads both runs into a ComparePanel.
    for row in page.locator(".ftkit-run").all():
        row.locator(".ftkit-run-select").check()
    page.click(".ftkit-compare-selected")
    _tab(page, "compare_runs.ipynb").wait_for(timeout=30_000)
    source = "\n".join(c.source for c in nbformat.read(root / "compare_runs.ipynb", as_version=4).cells)
    assert "ComparePanel(model, tokenizer, dataset=held_out, runs=runs)" in source
    assert f'load_run("{live_id}", root=RUNS_ROOT)' in source and f'RUNS_ROOT = "{runs.resolve()}"' in source

    # The launcher's "New fine-tuning notebook" card.
    _launcher_card(page, "New fine-tuning notebook").click()
    _tab(page, "fine_tuning.ipynb").wait_for(timeout=30_000)
    source = "\n".join(c.source for c in nbformat.read(root / "fine_tuning.ipynb", as_version=4).cells)
    assert "DataPanel(" in source and "TrainPanel(" in source
    _shot("labextension.png", page.screenshot)

    # The notebooks the extension wrote run as written (ftkit's API as they call it): the starter up
    # to its TrainPanel, the comparison up to its ComparePanel once its held-out rows are filled in.
    from nbclient import NotebookClient

    compare = nbformat.read(root / "compare_runs.ipynb", as_version=4)
    fill = [c for c in compare.cells if "ftkit-fill-in" in c.metadata.get("tags", [])]
    assert len(fill) == 1 and fill[0].source.endswith("held_out = None"), "the runs record no data source"
    fill[0].source = 'held_out = [{"prompt": "Where is my order?", "completion": "order_status"}] * 4'
    for name, nb in (("compare_runs", compare), ("fine_tuning", nbformat.read(root / "fine_tuning.ipynb", as_version=4))):
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(root)}}).execute()
        shown = [o["data"]["text/plain"] for o in nb.cells[-1].outputs if "text/plain" in o.get("data", {})]
        panel = {"compare_runs": "ComparePanel(", "fine_tuning": "TrainPanel("}[name]
        assert shown and shown[0].startswith(panel), (name, nb.cells[-1].outputs)
    print(f"sidebar screenshot: {sidebar_png}; sparkline {first['points']} -> "
          f"{grown['points']} points (step {first['last']} -> {grown['last']})")


def test_launcher_tour_card_copies_the_tour_and_opens_the_quickstart(ext_lab):
    lab, page, root = ext_lab.lab, ext_lab.page, ext_lab.root
    try:
        tour = lab.api("/ftkit/api/tour")
    except urllib.error.HTTPError as err:
        if err.code != 404:
            raise
        pytest.skip("the server has no GET ftkit/api/tour yet (the tour card needs it; see ftkit/lab/extension.py)")
    names = sorted(nb["name"] for nb in tour["notebooks"])
    assert "00_quickstart.ipynb" in names
    page.goto(f"{lab.url}/lab?token={lab.token}", wait_until="domcontentloaded")
    page.wait_for_selector(".lm-MenuBar-itemLabel:text-is('File')", timeout=2 * MINUTE_MS)
    _launcher_card(page, "ftkit tour").click()
    _tab(page, "00_quickstart.ipynb").wait_for(timeout=60_000)
    assert sorted(p.name for p in root.glob("0*.ipynb")) == names
    assert (root / "train.ipynb").is_file()
    _shot("labextension-tour.png", page.screenshot)
