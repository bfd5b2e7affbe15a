"""Start ``transformers serve`` on this machine (loopback, free port) for a run, a benchmark or a test.

>>> with TransformersServer(continuous_batching=True) as server:
...     engine = EndpointEngine([server.url], "/path/to/model")
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    """Wait until ``GET {url}/health`` answers 200 (raise if ``proc`` exits or ``timeout`` passes)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before answering {url}/health")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url}/health did not answer within {timeout:.0f}s")


class TransformersServer:
    """``transformers serve`` in a subprocess on ``127.0.0.1`` (needs ``pip install 'transformers[serving]'``).

    Args:
        model (`str`, *optional*): pin this model (``transformers serve MODEL``); unpinned, the server loads
            whatever path or Hub id a request names.
        continuous_batching (`bool`, defaults to `False`): batch concurrent requests (``--continuous-batching``).
        device (`str`, defaults to `"cpu"`): ``--device``.
        log (`Path`, *optional*): file for the server's output (default: discarded).
        extra_args (`tuple[str]`): more ``transformers serve`` arguments.
    """

    def __init__(self, model: str | None = None, continuous_batching: bool = False, device: str = "cpu",
                 log: str | Path | None = None, extra_args: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = shutil.which("transformers", path=str(Path(sys.executable).parent)) or shutil.which("transformers")
        if exe is None:
            raise RuntimeError("`transformers` CLI not found; install transformers[serving].")
        self.command = [exe, "serve", *([model] if model else []), "--host", "127.0.0.1", "--port", str(self.port),
                        "--device", device, *(["--continuous-batching"] if continuous_batching else []), *extra_args]
        self._log = open(log, "w") if log else None  # noqa: SIM115
        self.proc = subprocess.Popen(self.command, stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            wait_healthy(self.url, self.proc)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate the server (kill it if it does not stop within 20 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> TransformersServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
