"""Serve a model behind an OpenAI-compatible API (`transformers serve`) and build the requests that ask it.

Notebook 05 starts the merged model's server with `start_server`, asks it with the `openai` client
(`client.chat.completions.create`), and stops it; `benchmarks/serve_load.py` sends it many requests at once.

    server = start_server("outputs/tiny/merged")      # 127.0.0.1, a free port; returns once it answers
    client = OpenAI(base_url=server.base_url, api_key="not-needed")
    ...
    server.stop()

The audio travels as a client on another machine must send it: the file's bytes, base64 in OpenAI's
`input_audio` content part (`audio_part`). transformers 5.25's server cannot pass those bytes on to Voxtral's
processor (`accept_audio_bytes` says why), so the server is `transformers serve` started through this module
(`python -m tutorial_kit.serving serve MODEL ...`), which adds that one conversion and nothing else.
"""
from __future__ import annotations

import atexit
import base64
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"  # this machine only: the server is never reachable from outside
_running: list[Server] = []  # servers this process started and has not stopped yet


def audio_part(audio: bytes, format: str = "wav") -> dict:
    """OpenAI's content part for audio sent as bytes: `{"type": "input_audio", "input_audio": {"data": <base64>,
    "format": "wav"}}` (`format` is "wav" or "mp3" in OpenAI's API). vLLM takes it as it is; `transformers serve`
    takes it when started by `start_server` (see `accept_audio_bytes`)."""
    if not isinstance(audio, (bytes, bytearray)):
        raise TypeError(f"audio_part takes the audio file's bytes, not {type(audio).__name__}; "
                        "for an array use helpers.audio.wav_bytes(array) first.")
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio).decode("ascii"), "format": format}}


def question_messages(row: dict) -> list[dict]:
    """The chat messages that ask the served model about one dataset row: its audio as 16-kHz 16-bit WAV bytes
    (the WAV `build_conversation` hands the processor) and its category's instruction, as `build_conversation`
    builds them for the pipeline."""
    from helpers.audio import load_audio, wav_bytes
    from helpers.tasks import instruction_for

    wav = wav_bytes(load_audio(row["audio"]))
    return [{"role": "user", "content": [audio_part(wav), {"type": "text", "text": instruction_for(row.get("category"))}]}]


def _bytes_as_base64(part: dict) -> dict:
    """An audio part whose `url` is a `data:` URI, as the processor's base64 part; any other part unchanged."""
    url = part.get("url") if part.get("type") == "audio" else None
    if isinstance(url, str) and url.startswith("data:"):
        return {"type": "audio", "base64": url}
    return part


def accept_audio_bytes() -> None:
    """Make `transformers serve` (in this process) hand audio sent as bytes to Voxtral's processor as base64.

    transformers 5.25's server turns OpenAI's `{"type": "input_audio", "input_audio": {"data": <base64>,
    "format": "wav"}}` (and an `audio_url` holding a `data:` URI) into `{"type": "audio", "url": "data:audio/wav;
    base64,..."}`, and Voxtral's processor loads every audio `url` with `load_audio_as`, which knows only http(s)
    URLs and files: the request fails with 400 "Error loading audio: File not found: data:audio/wav;base64,..."
    (reproduced in tests/test_library_surprises.py). Here such a part becomes `{"type": "audio", "base64":
    <the data URI>}`, which the processor decodes from the bytes. Paths and http(s) URLs pass unchanged.
    Calling it twice changes nothing more.
    """
    from transformers.cli.serving.utils import BaseHandler

    original = BaseHandler.get_processor_inputs_from_messages
    if getattr(original, "accepts_audio_bytes", False):
        return

    def get_processor_inputs_from_messages(messages: list[dict], modality) -> list[dict]:
        converted = original(messages, modality)
        for message in converted:
            if isinstance(message.get("content"), list):
                message["content"] = [_bytes_as_base64(part) for part in message["content"]]
        return converted

    get_processor_inputs_from_messages.accepts_audio_bytes = True
    get_processor_inputs_from_messages.__doc__ = original.__doc__
    BaseHandler.get_processor_inputs_from_messages = staticmethod(get_processor_inputs_from_messages)


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now (the system picks it), so that servers started side by side
    (several notebooks, tests) do not clash. `start_server` tries again should another process take it first."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def default_device() -> str:
    """Where `helpers.loading.load_model_and_processor` puts a model: the GPU when there is one, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class ServerError(RuntimeError):
    """The server stopped, or did not answer in time; the message ends with the last lines of its log."""


class Server:
    """A `transformers serve` process on 127.0.0.1 (see `start_server`). `base_url` is what the OpenAI client
    takes; `model` is the name requests give (the folder, as the server was started with it). Use it as a context
    manager, or call `stop()`; it is stopped anyway when this Python process ends."""

    def __init__(self, model: str, port: int, command: list[str], process: subprocess.Popen, log_path: Path):
        self.model, self.port, self.command, self.process, self.log_path = model, port, command, process, log_path
        self._stop_asked = False  # set by stop(): a server stopped as asked is 'stopped', not 'killed by ...'

    @property
    def serve_command(self) -> str:
        """The same server from a terminal: `transformers serve`'s arguments, run through this module, which makes
        the server take audio bytes (`accept_audio_bytes`)."""
        arguments = self.command[self.command.index("serve"):] if "serve" in self.command else self.command
        return f"python -m {__spec__.name} " + " ".join(arguments)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        """The last `lines` lines the server wrote (stdout and stderr)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        # Progress bars redraw with carriage returns: keep what each line ended as
        kept = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
        return "\n".join(kept[-lines:])

    def _failure(self, what: str) -> ServerError:
        return ServerError(f"{what}\nCommand: {' '.join(self.command)}\nLast lines of its log ({self.log_path}):\n"
                           f"{self.log_tail()}")

    def wait_until_ready(self, timeout: float = 300.0) -> None:
        """Return once `GET /health` answers 200 (with a model on the command line, the server loads it before it
        listens); raise `ServerError` with the log's last lines if the process ends first or `timeout` passes."""
        deadline = time.monotonic() + timeout
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, never through a proxy
        while True:
            if not self.running():
                raise self._failure(f"transformers serve stopped (exit code {self.process.returncode}) before it answered.")
            try:
                with direct.open(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise self._failure(f"transformers serve did not answer on {self.url} within {timeout:.0f} s, "
                                    "and was stopped.")
            time.sleep(0.25)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server and the model process it started: SIGTERM to its process group, SIGKILL after `timeout`
        seconds. Doing it twice is harmless."""
        if self in _running:
            _running.remove(self)
        self._stop_asked = True
        if self.process.returncode is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self.process, signal.SIGKILL)  # whatever is left of its group (the model's process)
        if self.process.returncode is None:
            self.process.wait(5)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        code = self.process.returncode
        if self.running():
            state = "running"
        elif code is not None and code < 0:
            state = "stopped" if self._stop_asked else f"killed by {signal.Signals(-code).name}"
        else:
            state = f"stopped (exit code {code})"
        return f"Server({self.model!r} at {self.base_url}, {state})"


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    """Signal the process group `process` leads (it was started in a session of its own); nothing if it is gone."""
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_all() -> None:
    for server in list(_running):
        server.stop(timeout=5)


atexit.register(_stop_all)


def _launch(command: list[str], model: str, port: int, environment: dict[str, str] | None = None) -> Server:
    """Start `command` in a session of its own (so that `stop` reaches the processes it starts), its output going
    to a temporary log file, and keep it among the servers to stop when this process exits."""
    log = tempfile.NamedTemporaryFile(prefix="transformers-serve-", suffix=".log", delete=False)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env=environment, start_new_session=True)
    log.close()
    server = Server(model, port, command, process, Path(log.name))
    _running.append(server)
    return server


def start_server(model: str | os.PathLike, port: int | None = None, device: str | None = None,
                 continuous_batching: bool = False, extra_args: tuple[str, ...] = (), timeout: float = 300.0,
                 stop_others: bool = True) -> Server:
    """Start `transformers serve MODEL` on 127.0.0.1 and return once it answers.

    - `port`: a free one by default (`free_port`); if another process takes it before the server binds it, the
      server is started again on another free port (twice at most).
    - `device`: "cpu" or "cuda"; by default where `load_model_and_processor` puts models (`default_device`).
    - `continuous_batching`: `--continuous-batching` (transformers 5.25 applies it to text-only models; for
      Voxtral it logs that it falls back to one request at a time).
    - `timeout`: seconds to wait for it to answer; past them, or if it stops first, `ServerError` with its log.
    - `stop_others`: stop the servers this process started before (running a notebook cell again).

    The server runs in a session of its own, writes its log to a temporary file, and stops when `stop()` is
    called, when this Python process exits, or, should this process be killed, by itself within a second or so.
    """
    if stop_others:
        _stop_all()
    model = str(model)
    device = device or default_device()
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
                   "TOKENIZERS_PARALLELISM": "false"}
    if Path(model).is_dir():
        environment["HF_HUB_OFFLINE"] = "1"  # a local folder needs no network
    tries = 3 if port is None else 1
    for attempt in range(tries):
        chosen = port or free_port()
        serve_args = ["serve", model, "--host", HOST, "--port", str(chosen), "--device", device,
                      *(["--continuous-batching"] if continuous_batching else []), *extra_args]
        # --stop-with-parent: the server stops by itself should this process be killed (see `main`)
        # this module by its import name (`__spec__`: `__name__` is "__main__" under `python -m`)
        command = [sys.executable, "-m", __spec__.name, "--stop-with-parent", str(os.getpid()), *serve_args]
        server = _launch(command, model, chosen, environment)
        try:
            server.wait_until_ready(timeout)
            return server
        except ServerError:
            server.stop()
            if attempt == tries - 1 or "address already in use" not in server.log_tail(200).lower():
                raise
    raise AssertionError("unreachable")


def _stop_with_parent(parent: int) -> None:
    """In the server: once the process that started it is gone (it was killed: a clean exit stops the server
    itself), stop as Ctrl+C would, and for good after 15 s."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(15)
        os._exit(1)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    """`python -m tutorial_kit.serving [--stop-with-parent PID] serve MODEL [transformers serve's options]`:
    `transformers serve` with `accept_audio_bytes` applied; with `--stop-with-parent`, it stops once process PID,
    which started it, is gone."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--stop-with-parent"]:
        _stop_with_parent(int(arguments[1]))
        arguments = arguments[2:]
    accept_audio_bytes()
    from transformers.cli.transformers import app

    app(args=arguments, prog_name="transformers")


if __name__ == "__main__":
    main()
