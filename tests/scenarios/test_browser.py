"""Notebooks 01 and 05 in a real browser: JupyterLab on 127.0.0.1, Chromium driven by Playwright.

The widget tests in test_plots_widgets.py call the widgets' methods; only a browser shows that the
widget manager renders them and that their callbacks fire. Here a fresh JupyterLab serves a temporary
copy of the notebooks (tiny profile, outputs in a temporary folder), each notebook is restarted and
run from top to bottom, and then used as a learner would: notebook 01's audio browser changes its
player when the selection changes; in notebook 05 the upload widget and the microphone app answer.
Chromium's fake microphone plays a spoken question, so the app's Record button records real speech.

Needs Chromium and Playwright: `make browser` (Playwright with the environment `make setup` makes,
Chromium from `tools/install_browser.sh`); skipped without them, except in CI (`$CI` set), where
their absence is a failure. Screenshots go to $VOXTRAL_SCREENSHOTS or
tests/browser/screenshots/ (printed at the end of each test).
"""
import importlib.util
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.extended

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("VOXTRAL_SCREENSHOTS") or REPO / "tests" / "browser" / "screenshots")
QUESTION = ("Always face forward. Take three steps left. Take three steps right. Take two steps forward. "
            "Take two steps backward. Do you return to the starting point?")
# Notebook 05's microphone app, as a learner launches it; added to the copy when the notebook has none.
DEMO_CELL = ("from tutorial_kit.demo import build_demo, launch_demo\n\n"
             "demo = launch_demo(build_demo(served, served_processor, max_new_tokens=profile.max_new_tokens))")
VISIBLE = ".jp-NotebookPanel:not(.lm-mod-hidden)"
RUN_SECONDS = 300  # one notebook, restart to last cell, on a busy 2-core machine: about 40 s


def chromium_path():
    """$VOXTRAL_CHROMIUM, Debian's Chromium, or the one `playwright install chromium` downloaded."""
    if os.environ.get("VOXTRAL_CHROMIUM"):
        return os.environ["VOXTRAL_CHROMIUM"] if Path(os.environ["VOXTRAL_CHROMIUM"]).exists() else None
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if importlib.util.find_spec("playwright") is None:
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        bundled = playwright.chromium.executable_path
    return bundled if Path(bundled).exists() else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def tools():
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (it comes with the project's environment: make setup)")
    chromium = chromium_path()
    if chromium is None:
        missing.append(f"Chromium (none at $VOXTRAL_CHROMIUM={os.environ['VOXTRAL_CHROMIUM']!r})"
                       if os.environ.get("VOXTRAL_CHROMIUM") else "Chromium (apt-get install chromium)")
    if missing:
        reason = f"Browser test needs {' and '.join(missing)}; `make browser` installs both."
        if os.environ.get("CI"):
            pytest.fail(f"{reason} In CI this test must run.")
        pytest.skip(reason)
    return chromium


def prepare_notebooks(root: Path):
    """Copies of notebooks 01 and 05 (05 with the microphone app), and JupyterLab settings without pop-ups."""
    (root / "notebooks").mkdir()
    for name in ("01_explore_data.ipynb", "05_pipeline.ipynb"):
        shutil.copy(REPO / "notebooks" / name, root / "notebooks" / name)
    pipeline = nbformat.read(root / "notebooks" / "05_pipeline.ipynb", as_version=4)
    if not any("launch_demo(" in cell.source for cell in pipeline.cells):
        pipeline.cells.insert(len(pipeline.cells) - 1, nbformat.v4.new_code_cell(DEMO_CELL))
        nbformat.write(pipeline, root / "notebooks" / "05_pipeline.ipynb")
    settings = root / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                            "checkForUpdates": False}))


def prepare_adapter_and_recordings(root: Path, profile) -> dict:
    """The adapter notebook 05 loads, a spoken 10-s 44.1 kHz stereo question (1.7 MB), a broken file."""
    from scipy.signal import resample_poly

    from helpers.loading import load_model_and_processor, save_adapter
    from helpers.lora import add_lora

    # Notebook 03 trains the adapter; an untrained LoRA wrapper has the same files and loads the same way.
    model, processor = load_model_and_processor(profile)
    save_adapter(add_lora(model), processor, root / "outputs" / profile.name / "adapter")
    wav = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "--stdout", QUESTION],
                         check=True, capture_output=True).stdout
    speech, rate = sf.read(io.BytesIO(wav), dtype="float32")
    at_44k = resample_poly(speech, 44100 // rate, 1)[: 10 * 44100]
    at_44k = np.pad(at_44k, (0, 10 * 44100 - len(at_44k)))
    question = root / "question_44k_stereo.wav"  # more than the 1 MB Colab's FileUpload passes on
    sf.write(question, np.stack([at_44k, 0.7 * at_44k], axis=1), 44100, subtype="PCM_16")
    broken = root / "broken.wav"
    broken.write_bytes(b"RIFF\x24\x00\x00\x00WAVEthis is not audio at all")
    return {"question": question, "broken": broken}


@pytest.fixture(scope="module")
def lab(tools, tmp_path_factory, profile):
    """A fresh JupyterLab on 127.0.0.1 with a random token over a temporary folder (tiny profile,
    outputs inside it); stopped, with its kernels, at the end."""
    root, port, token = tmp_path_factory.mktemp("lab"), free_port(), secrets.token_hex(16)
    prepare_notebooks(root)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for stale in SCREENSHOTS.glob("*-failed.png"):  # a failure shot from an earlier run would mislead
        stale.unlink()
    env = {key: value for key, value in os.environ.items()  # this machine's model, adapter, dtype... stay out
           if not key.startswith("VOXTRAL_") or key == "VOXTRAL_TUTORIAL_CACHE"}
    env.update(VOXTRAL_PROFILE="tiny", VOXTRAL_OUTPUTS=str(root / "outputs"),
               JUPYTER_CONFIG_DIR=str(root / "jupyter-config"), JUPYTER_RUNTIME_DIR=str(root / "jupyter-runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(root / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(root / "lab-workspaces"))
    log = open(root / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        files = prepare_adapter_and_recordings(root, profile)  # while the server starts
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{(root / 'jupyterlab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield {"base": base, "token": token, "root": root, **files}
    finally:
        try:  # the server's own shutdown stops its kernels (and the app one of them serves) too
            server_api({"base": base, "token": token}, "shutdown", method="POST")
            server.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def page(tools, lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=tools, args=[
            "--no-sandbox",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={lab['question']}",  # the microphone says QUESTION
        ])
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.grant_permissions(["microphone"])
        yield context.new_page()
        browser.close()


def say(capsys, text: str):
    with capsys.disabled():  # shown even when pytest captures output
        print(f"\n  {text}", end="")


def screenshot(page, name: str, capsys) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    say(capsys, f"screenshot: {path}")
    return path


def server_api(lab, path: str, method: str = "GET"):
    request = urllib.request.Request(f"{lab['base']}/api/{path}", method=method,
                                     headers={"Authorization": f"token {lab['token']}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def wait_for_kernel(lab, notebook_path: str, seconds: float = 120):
    """Until the notebook's kernel has started and is idle: restarting before that asks which kernel to start."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for session in server_api(lab, "sessions"):
            if session["path"] == notebook_path and session["kernel"]["execution_state"] == "idle":
                return
        time.sleep(0.5)
    pytest.fail(f"The kernel of {notebook_path} did not start within {seconds:.0f} s.")


def open_and_run_all(page, lab, notebook: str, capsys):
    """Open the notebook, restart its kernel, run every cell, and wait until the last one ran."""
    opened = time.monotonic()
    page.goto(f"{lab['base']}/lab/tree/notebooks/{notebook}?token={lab['token']}")
    wait_for_kernel(lab, f"notebooks/{notebook}")
    page.wait_for_function(
        f"() => document.querySelector('{VISIBLE} .jp-Notebook-ExecutionIndicator')?.dataset.status === 'idle'",
        timeout=90_000)
    page.click(f"{VISIBLE} jp-button[data-command='notebook:restart-run-all']")
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for()
    assert "Restart Kernel?" in dialog.text_content()
    dialog.locator(".jp-mod-accept").click()
    dialog.wait_for(state="detached")
    started, start_by, deadline = False, time.monotonic() + 60, time.monotonic() + RUN_SECONDS
    while time.monotonic() < deadline and (started or time.monotonic() < start_by):
        # textContent, not innerText: cells scrolled out of view have no rendered text
        state = page.evaluate(f"""() => ({{
            prompts: [...document.querySelectorAll('{VISIBLE} .jp-CodeCell .jp-InputPrompt')]
                     .map(e => e.textContent.trim()),
            status: document.querySelector('{VISIBLE} .jp-Notebook-ExecutionIndicator')?.dataset.status}})""")
        prompts, idle = state["prompts"], state["status"] == "idle"
        started = started or "[*]:" in prompts
        if started and idle and all(any(c.isdigit() for c in p) for p in prompts):
            say(capsys, f"{notebook}: opened, restarted and ran all {len(prompts)} code cells in "
                        f"{time.monotonic() - opened:.0f} s")
            return
        if started and idle and "[*]:" not in prompts:  # run-all stops at a failing cell
            break
        time.sleep(1)
    errors = page.evaluate(f"""() => [...document.querySelectorAll(
        '{VISIBLE} .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
        .map(e => e.textContent).join('\\n---\\n')""")
    page.screenshot(path=str(SCREENSHOTS / f"{notebook}-failed.png"))
    pytest.fail(f"{notebook} did not run to the end (prompts {prompts}):\n{errors[-4000:]}")


def test_notebook_01_runs_and_its_audio_browser_follows_the_selection(page, lab, capsys):
    open_and_run_all(page, lab, "01_explore_data.ipynb", capsys)
    browser = page.locator(f"{VISIBLE} .widget-vbox").filter(has=page.locator(".widget-hslider")).last
    browser.scroll_into_view_if_needed()
    player = browser.locator(".widget-html audio")
    card = browser.locator(".widget-html-content")

    def shown():
        return player.get_attribute("src"), card.text_content()

    first_src, first_card = shown()
    assert first_src.startswith("data:audio/wav;base64,") and "formal_fallacies" in first_card
    screenshot(page, "01-audio-browser-first", capsys)

    browser.locator(".widget-dropdown select").select_option("navigate")
    expect_change(lambda: shown()[0], first_src, "the player after choosing 'navigate'")
    navigate_src, navigate_card = shown()
    assert "navigate" in navigate_card and "formal_fallacies" not in navigate_card

    browser.locator(".noUi-handle").focus()
    page.keyboard.press("ArrowRight")  # the slider's next question of the same category
    expect_change(lambda: shown()[0], navigate_src, "the player after moving the slider")
    assert "navigate" in shown()[1] and shown()[1] != navigate_card
    browser.scroll_into_view_if_needed()
    screenshot(page, "01-audio-browser-navigate-2nd", capsys)


def expect_change(read, before, what: str, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if read() != before:
            return
        time.sleep(0.2)
    pytest.fail(f"{what} did not change within {seconds:.0f} s")


def test_notebook_05_runs_and_answers_uploads_and_the_microphone(page, lab, capsys):
    from playwright.sync_api import expect

    open_and_run_all(page, lab, "05_pipeline.ipynb", capsys)

    # The ipywidgets upload: a 1.7-MB stereo WAV (fine in JupyterLab), then a broken file.
    asker = page.locator(f"{VISIBLE} .widget-vbox").filter(has=page.locator(".widget-upload")).last
    asker.scroll_into_view_if_needed()
    answer = asker.locator(".widget-html-content")
    for path, expected in [(lab["broken"], "could not decode audio"), (lab["question"], "model says")]:
        with page.expect_file_chooser() as chooser:
            asker.locator(".widget-upload").click()
        chooser.value.set_files(str(path))
        asker.locator(".widget-dropdown select").select_option("navigate")
        asker.locator("button.widget-button", has_text="Ask").click()
        expect_text(answer, expected, f"the upload widget's answer to {path.name}")
    assert "question_44k_stereo.wav</b> (10.0 s)" in answer.inner_html()
    screenshot(page, "05-upload-widget-answer", capsys)

    # The Gradio app, inline: record from the (fake) microphone, ask, get an answer.
    frame_element = page.locator(f"{VISIBLE} iframe[src^='http://127.0.0.1']").last
    frame_element.scroll_into_view_if_needed()
    app = frame_element.content_frame
    app.get_by_role("button", name="Record", exact=True).click()
    page.wait_for_timeout(3000)
    app.get_by_role("button", name="Stop", exact=True).first.click()
    app.get_by_role("button", name="Play", exact=True).wait_for(timeout=30_000)  # the recording came back as audio
    app.get_by_label("Kind of question").click()
    app.get_by_role("option", name="Object counting (a number)").click()
    app.get_by_role("button", name="Ask", exact=True).click()
    answer_box = app.get_by_label("Answer")
    expect_value(answer_box, app, "the app's answer to the microphone recording")
    frame_element.scroll_into_view_if_needed()
    screenshot(page, "05-microphone-app-answer", capsys)

    # A broken upload shows a message in the app; the next upload is answered again.
    app.get_by_role("button", name="Clear").first.click()
    app.get_by_role("button", name="Upload file").click()
    app.locator("input[type=file]").set_input_files(str(lab["broken"]))
    app.get_by_role("button", name="Ask", exact=True).click()
    app.locator(".toast-body", has_text="'broken.wav' could not be decoded as audio").wait_for(timeout=30_000)
    page.wait_for_timeout(600)  # the message slides in
    screenshot(page, "05-microphone-app-broken-file", capsys)
    app.locator(".toast-body button").first.click()  # closes the message, so the next wait sees no old one
    app.locator(".toast-body").wait_for(state="detached")
    app.get_by_role("button", name="Clear").first.click()
    app.get_by_role("button", name="Upload file").click()
    app.locator("input[type=file]").set_input_files(str(lab["question"]))
    app.get_by_role("button", name="Play", exact=True).wait_for(timeout=30_000)
    expect(answer_box).to_have_value("")  # a new recording clears the answer to the previous one
    app.get_by_role("button", name="Ask", exact=True).click()
    expect_value(answer_box, app, "the app's answer to the uploaded 44.1 kHz stereo WAV")


def expect_text(locator, words: str, what: str, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if words in (locator.text_content() or ""):
            return
        time.sleep(0.3)
    pytest.fail(f"{what}: no {words!r} within {seconds:.0f} s; the page shows {locator.text_content()!r}")


def expect_value(textbox, app, what: str, seconds: float = 90):
    """Wait for the answer; an error toast instead fails with its text."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if textbox.input_value():
            return
        if app.locator(".toast-body").count():
            pytest.fail(f"{what}: the app showed an error: {app.locator('.toast-body').first.text_content()}")
        time.sleep(0.3)
    pytest.fail(f"{what}: no answer within {seconds:.0f} s")
