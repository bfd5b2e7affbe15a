"""Serving helpers for the tests: a real ``transformers serve`` on 127.0.0.1, and a loopback proxy in front
of it that injects faults (429, 503, timeouts, malformed JSON, 401, 404) and counts what it forwards."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from xinstruct.inference.replay import request_key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} not healthy after {timeout}s")


class TransformersServe:
    """``transformers serve`` in a subprocess on a free loopback port (``force_model`` pins one model)."""

    def __init__(self, force_model: str | None = None, extra_args: tuple[str, ...] = (), log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).with_name("transformers")
        cmd = [str(exe), "serve", *([force_model] if force_model else []), "--host", "127.0.0.1",
               "--port", str(self.port), "--device", "cpu", *extra_args]
        self._log = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_healthy(self.url, self.proc)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()


class FaultProxy:
    """A loopback HTTP proxy in front of ``upstream``.

    Args:
        fault_rate: share of POSTs answered with a fault instead of being forwarded.
        faults: which faults to draw from (``429``, ``503``, ``timeout``, ``malformed``).
        hang: seconds a ``timeout`` fault waits before answering (set it above the client timeout).
        delay: seconds added before forwarding every POST (to slow a run down for a kill).
        token: when set, requests without ``Authorization: Bearer <token>`` get 401.
        served_model: when set, requests naming another model get vLLM's 404.

    ``forwarded`` lists the request keys (as :func:`request_key` computes them for the completions route)
    of the POSTs sent upstream, in order; ``outcomes`` counts what was answered.
    """

    def __init__(self, upstream: str, fault_rate: float = 0.0, faults=("429", "503", "timeout"), hang: float = 3.0,
                 delay: float = 0.0, token: str | None = None, served_model: str | None = None, seed: int = 0):
        self.upstream = upstream.rstrip("/")
        self.fault_rate = fault_rate
        self.faults = list(faults)
        self.hang = hang
        self.delay = delay
        self.token = token
        self.served_model = served_model
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.forwarded: list[str] = []
        self.outcomes: Counter = Counter()
        self.auth_headers: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                with urllib.request.urlopen(proxy.upstream + self.path, timeout=10) as r:
                    self._send(r.status, r.read())

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                proxy.handle(self, body)

            def _send(self, status: int, data: bytes, headers: dict | None = None):
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, handler, body: bytes) -> None:
        payload = json.loads(body)
        with self.lock:
            self.auth_headers.append(handler.headers.get("authorization", ""))
            draw = self.rng.random()
            fault = self.rng.choice(self.faults) if draw < self.fault_rate else None
        if self.token is not None and handler.headers.get("authorization") != f"Bearer {self.token}":
            return self._answer(handler, "401", 401, {"error": "Unauthorized"})
        if self.served_model is not None and payload.get("model") != self.served_model:
            msg = f"The model `{payload.get('model')}` does not exist."
            return self._answer(handler, "404", 404, {"object": "error", "message": msg, "type": "NotFoundError", "code": 404})
        if fault == "timeout":
            time.sleep(self.hang)
            return self._answer(handler, "timeout", 504, {"error": "late"})
        if fault in ("429", "503"):
            return self._answer(handler, fault, int(fault), {"error": f"injected {fault}"}, {"retry-after": "0"})
        if fault == "malformed":
            with self.lock:
                self.outcomes["malformed"] += 1
            return handler._send(200, b'{"choices": [{"text": "cut sh')
        with self.lock:  # counted on arrival, so a request in flight when its client dies counts then
            self.forwarded.append(request_key({"route": "completions", **payload}))
        if self.delay:
            time.sleep(self.delay)
        req = urllib.request.Request(self.upstream + handler.path, data=body, method="POST",
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                status, data = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, data = e.code, e.read()
        with self.lock:
            self.outcomes[f"upstream-{status}"] += 1
        handler._send(status, data)

    def _answer(self, handler, outcome: str, status: int, obj: dict, headers: dict | None = None) -> None:
        with self.lock:
            self.outcomes[outcome] += 1
        handler._send(status, json.dumps(obj).encode(), headers)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
