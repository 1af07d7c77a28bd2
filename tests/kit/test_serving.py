"""tutorial_kit.serving: the requests (audio bytes -> OpenAI content part), the conversion that lets `transformers serve`
take them, the server's lifecycle (free port, readiness, a dead or silent server reported with its log, stopping
every process it started), and, in the extended tests, a real `transformers serve` on the tiny model: its answers
are the pipeline's, and bad audio in one request is refused with a readable 400 while the others are answered."""
import base64
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tutorial_kit import serving

ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def group_members(group: int) -> list[int]:
    """The live processes of process group `group` (Linux's /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


# ---- the requests ----

def test_audio_part_is_openais_input_audio_part():
    part = serving.audio_part(b"RIFF....WAVE", format="wav")
    assert part == {"type": "input_audio", "input_audio": {"data": base64.b64encode(b"RIFF....WAVE").decode(), "format": "wav"}}


def test_audio_part_takes_bytes_not_an_array():
    with pytest.raises(TypeError, match="wav_bytes"):
        serving.audio_part(np.zeros(16000, np.float32))


def test_question_messages_send_the_pipelines_wav_and_instruction(splits):
    """The bytes sent are the WAV `build_conversation` gives the pipeline, and the text its instruction."""
    from helpers.tasks import build_conversation

    row = splits["test"][0]
    [message] = serving.question_messages(row)
    [reference] = build_conversation(row)
    audio, text = message["content"]
    assert message["role"] == reference["role"] == "user"
    assert audio["input_audio"]["data"] == reference["content"][0]["base64"]
    assert text == reference["content"][1]


@pytest.fixture()
def server_parsing(monkeypatch):
    """transformers serve's message parsing, restored after the test (accept_audio_bytes patches it)."""
    from transformers.cli.serving.utils import BaseHandler, Modality

    monkeypatch.setattr(BaseHandler, "get_processor_inputs_from_messages",
                        BaseHandler.__dict__["get_processor_inputs_from_messages"])
    return lambda messages: BaseHandler.get_processor_inputs_from_messages(messages, Modality.MULTIMODAL)


def test_accept_audio_bytes_gives_the_processor_the_pipelines_inputs(server_parsing, processor, splits):
    """With the conversion, the bytes of OpenAI's `input_audio` part reach Voxtral's processor, and the model gets
    the very inputs the pipeline gives it for the same row (`build_conversation`)."""
    import torch

    from helpers.tasks import build_conversation

    serving.accept_audio_bytes()
    serving.accept_audio_bytes()  # twice changes nothing more
    row = splits["test"][1]
    parts = server_parsing(serving.question_messages(row))
    assert parts[0]["content"][0] == {"type": "audio", "base64": "data:audio/wav;base64,"
                                      + build_conversation(row)[0]["content"][0]["base64"]}
    settings = dict(add_generation_prompt=True, tokenize=True, return_dict=True)
    served = processor.apply_chat_template(parts, **settings)
    pipeline = processor.apply_chat_template(build_conversation(row), **settings)
    assert torch.equal(served["input_ids"], pipeline["input_ids"])
    assert torch.equal(served["input_features"], pipeline["input_features"])


def test_accept_audio_bytes_leaves_paths_and_urls_alone(server_parsing, tmp_path):
    serving.accept_audio_bytes()
    messages = [{"role": "user", "content": [
        {"type": "audio_url", "audio_url": {"url": str(tmp_path / "question.wav")}},
        {"type": "audio_url", "audio_url": {"url": "https://example.org/question.mp3"}},
        {"type": "text", "text": "What?"}]}]
    assert server_parsing(messages)[0]["content"] == [
        {"type": "audio", "url": str(tmp_path / "question.wav")},
        {"type": "audio", "url": "https://example.org/question.mp3"},
        {"type": "text", "text": "What?"}]


# ---- the server's lifecycle, with stand-in processes (no model: seconds) ----

HEALTHY = """
import http.server, sys
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
print("listening", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


def test_free_port_can_be_bound_on_127_0_0_1():
    import socket

    port = serving.free_port()
    with socket.socket() as probe:
        probe.bind((serving.HOST, port))


def test_wait_until_ready_returns_once_health_answers():
    port = serving.free_port()
    server = serving._launch([*python(HEALTHY), str(port)], "stand-in", port)
    try:
        server.wait_until_ready(timeout=60)
        assert server.running()
    finally:
        server.stop()
    assert not server.running()


def test_a_server_that_dies_is_reported_with_its_log():
    server = serving._launch(python("print('OSError: no config.json in /nowhere/merged', flush=True); raise SystemExit(3)"),
                             "/nowhere/merged", serving.free_port())
    with pytest.raises(serving.ServerError, match=r"(?s)exit code 3.*Last lines of its log.*no config\.json in /nowhere"):
        server.wait_until_ready(timeout=60)


def test_a_server_that_never_answers_is_stopped_after_the_timeout():
    server = serving._launch(python("import time; print('still importing', flush=True); time.sleep(120)"),
                             "stand-in", serving.free_port())
    wait_for(lambda: "still importing" in server.log_tail(), 30)
    with pytest.raises(serving.ServerError, match=r"(?s)did not answer on http://127\.0\.0\.1:\d+ within 1 s.*still importing"):
        server.wait_until_ready(timeout=1)
    assert not server.running()


def test_stop_ends_the_server_and_the_processes_it_started():
    """transformers serve runs the model in a second process: `stop` ends both."""
    server = serving._launch(python("""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        print("child", child.pid, flush=True)
        time.sleep(120)
    """), "stand-in", serving.free_port())
    assert wait_for(lambda: "child" in server.log_tail(), 30), server.log_tail()
    child = int(server.log_tail().split("child", 1)[1].split()[0])
    assert alive(child)
    server.stop()
    assert wait_for(lambda: not alive(child), 10)
    assert not server.running()
    assert repr(server).endswith(", stopped)")  # stopped as asked: no signal name to puzzle over


def test_a_server_that_was_killed_says_by_what():
    server = serving._launch(python("import time; time.sleep(120)"), "stand-in", serving.free_port())
    server.process.kill()
    server.process.wait(10)
    assert repr(server).endswith("killed by SIGKILL)")


def test_the_printed_command_is_one_a_learner_can_run_in_a_terminal(monkeypatch):
    """The server runs through this module (its audio conversion and its stop-with-parent watch): the printed
    command is that module's, without the watch, which needs the notebook's process."""
    command = [sys.executable, "-m", "tutorial_kit.serving", "--stop-with-parent", "123", "serve", "outputs/tiny/merged",
               "--host", "127.0.0.1", "--port", "8000", "--device", "cpu"]
    server = serving.Server("outputs/tiny/merged", 8000, command, None, Path("log"))
    assert server.serve_command == ("python -m tutorial_kit.serving serve outputs/tiny/merged --host 127.0.0.1 "
                                    "--port 8000 --device cpu")


def test_the_server_stops_by_itself_when_the_process_that_started_it_is_killed(tmp_path):
    """A kernel killed without cleaning up: `--stop-with-parent` stops the server within a second or so."""
    pid_file = tmp_path / "server.pid"
    parent = subprocess.Popen(python(f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import os, time; from tutorial_kit.serving import _stop_with_parent; "
                          "_stop_with_parent(os.getppid()); open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                          "time.sleep(120)"])
        time.sleep(120)
    """), cwd=ROOT)
    try:
        assert wait_for(lambda: pid_file.exists() and pid_file.read_text(), 60)
        server = int(pid_file.read_text())
        assert alive(server)
    finally:
        parent.kill()
        parent.wait()
    assert wait_for(lambda: not alive(server), 10)


def test_start_server_moves_to_another_port_when_its_port_was_taken(monkeypatch):
    """Between `free_port` and the server binding it, another process may take the port: the server, which
    then dies with 'address already in use', is started again on another free port."""
    taken, free = serving.free_port(), serving.free_port()
    ports = iter([taken, free])
    monkeypatch.setattr(serving, "free_port", lambda host=serving.HOST: next(ports))
    launched = []

    def launch(command, model, port, environment=None):
        launched.append(command)
        if port == taken:
            fake = python(f"print(\"ERROR: [Errno 98] error while attempting to bind on address ('127.0.0.1', {port}): "
                          "address already in use\", flush=True); raise SystemExit(1)")
        else:
            fake = [*python(HEALTHY), str(port)]
        return original(fake, model, port, environment)

    original = serving._launch
    monkeypatch.setattr(serving, "_launch", launch)
    server = serving.start_server("stand-in", device="cpu", timeout=60)
    try:
        assert server.port == free and server.base_url == f"http://127.0.0.1:{free}/v1"
        assert [command[command.index("--port") + 1] for command in launched] == [str(taken), str(free)]
        assert all(command[command.index("--host") + 1] == "127.0.0.1" for command in launched)
    finally:
        server.stop()


# ---- a real transformers serve on the tiny model (a server takes 20-90 s to start on a busy 2-core machine) ----

@pytest.fixture(scope="module")
def tiny_server(model_and_processor, tmp_path_factory):
    """The tiny model saved as notebook 05 saves the merged one, served; and the pipeline's answers to compare."""
    model, processor = model_and_processor
    folder = tmp_path_factory.mktemp("served") / "merged"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    server = serving.start_server(folder, device="cpu")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pipeline_answers(model_and_processor, splits, profile):
    from transformers import pipeline

    from helpers.tasks import build_conversation

    model, processor = model_and_processor
    rows = [splits["test"][i] for i in range(6)]
    pipe = pipeline("any-to-any", model=model, processor=processor)
    outputs = pipe(text=[build_conversation(row) for row in rows], batch_size=4, max_new_tokens=profile.max_new_tokens,
                   do_sample=False, return_full_text=False)
    return rows, [out[0]["generated_text"].strip() for out in outputs]


def client_for(server):
    from openai import OpenAI

    return OpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0, timeout=120)


def ask(client, server, messages, profile):
    reply = client.chat.completions.create(model=server.model, messages=messages, max_tokens=profile.max_new_tokens,
                                           temperature=0)
    return reply.choices[0].message.content.strip()


@pytest.mark.extended
def test_served_answers_are_the_pipelines(tiny_server, pipeline_answers, profile):
    rows, expected = pipeline_answers
    client = client_for(tiny_server)
    assert client.models.list().data[0].id == tiny_server.model
    assert [ask(client, tiny_server, serving.question_messages(row), profile) for row in rows] == expected


@pytest.mark.extended
def test_bad_audio_gets_a_readable_400_and_the_other_requests_their_answers(tiny_server, pipeline_answers, profile):
    """Five requests at once, the third with bytes that are not audio: that one is refused with 400 and a message
    saying the audio could not be decoded; the four others get their own rows' answers, and the server goes on."""
    import openai

    rows, expected = pipeline_answers
    client = client_for(tiny_server)
    bad = [{"role": "user", "content": [serving.audio_part(b"these bytes are not audio " * 50),
                                        {"type": "text", "text": "What do you hear?"}]}]
    requests = [serving.question_messages(rows[0]), serving.question_messages(rows[1]), bad,
                serving.question_messages(rows[2]), serving.question_messages(rows[3])]
    results: list = [None] * len(requests)

    def send(index):
        try:
            results[index] = ask(client, tiny_server, requests[index], profile)
        except Exception as error:
            results[index] = error

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    refused = results[2]
    assert isinstance(refused, openai.BadRequestError), refused
    assert refused.status_code == 400
    assert "decode" in refused.response.json()["detail"] and "audio" in refused.response.json()["detail"]
    assert results[:2] + results[3:] == expected[:4]
    assert ask(client, tiny_server, serving.question_messages(rows[4]), profile) == expected[4]
    assert tiny_server.running()


@pytest.mark.extended
def test_the_server_listens_on_127_0_0_1_only(tiny_server):
    """Bound to 127.0.0.1 itself, not to every address: even 127.0.0.2, the same machine, is refused."""
    import socket
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{tiny_server.port}/health", timeout=10) as response:
        assert response.status == 200
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.settimeout(5)
        probe.connect(("127.0.0.2", tiny_server.port))
    assert f"Uvicorn running on http://127.0.0.1:{tiny_server.port}" in tiny_server.log_tail(200)


@pytest.mark.extended
def test_stop_ends_the_real_server_and_its_model_process(tiny_server):
    """Last in this file: the module's server, stopped, leaves no process of its group behind."""
    group = tiny_server.process.pid
    assert len(group_members(group)) >= 2  # the API server and the model's process
    tiny_server.stop()
    assert not tiny_server.running()
    assert wait_for(lambda: not group_members(group), 10), group_members(group)
