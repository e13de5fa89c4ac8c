"""The kit where its users use it: the quickstart in JupyterLab, driven through a real Chromium.

Starts JupyterLab on 127.0.0.1 with a token, opens ``00_quickstart`` (its parameters made small),
runs all cells, waits for the panels to render, presses the training panel's Start button and
waits until the live chart shows that run's losses. The screenshots land in the test's tmp_path
and in ``tests/browser/output/``.

Uses Debian's Chromium (``apt-get install -y chromium``; ``.ci/run`` installs it) through
Playwright's Python package, never a browser Playwright downloads. Without Chromium the test
skips locally and fails in CI (``CI`` set), so CI never skips it silently.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

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
    _require(f"Chromium ({CHROMIUM})", CHROMIUM.exists(),
             "install Debian's Chromium with `sudo apt-get install -y chromium` (.ci/run does this)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require("Playwright's Python package", False, "pip install -e '.[dev]' (make setup does this)")

    root, runs, home = tmp_path / "notebooks", tmp_path / "runs", tmp_path / "home"
    for folder in (root, runs, home):
        folder.mkdir()
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
    _require(f"Chromium ({CHROMIUM})", CHROMIUM.exists(),
             "install Debian's Chromium with `sudo apt-get install -y chromium` (.ci/run does this)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require("Playwright's Python package", False, "pip install -e '.[dev]' (make setup does this)")

    root, runs, home = tmp_path / "notebooks", tmp_path / "runs", tmp_path / "home"
    for folder in (root, runs, home):
        folder.mkdir()
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
