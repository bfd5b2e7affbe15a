"""Serving helpers for the tests (the server itself is :class:`xinstruct.inference.server.TransformersServer`): a
loopback proxy in front of it that injects faults (429, 503, timeouts, malformed JSON, 401, 404) and counts what it
forwards, a logprob server, and a server that says (or not) which model it serves."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from xinstruct.inference.replay import request_key


class FaultProxy:
    """A loopback HTTP proxy in front of ``upstream``.

    Args:
        fault_rate: share of POSTs answered with a fault instead of being forwarded.
        faults: which faults to draw from (``429``, ``503``, ``timeout``, ``malformed``).
        hang: seconds a ``timeout`` fault waits before answering (set it above the client timeout).
        delay: seconds added before forwarding every POST (to slow a run down for a kill).
        token: when set, requests without ``Authorization: Bearer <token>`` get 401.
        served_model: when set, requests naming another model get vLLM's 404.
        refuse_marker: when set, prompts containing it get TGI's 422 for an over-long input.

    ``forwarded`` lists the request keys (as :func:`request_key` computes them for the completions route)
    of the POSTs sent upstream, in order; ``outcomes`` counts what was answered.
    """

    def __init__(self, upstream: str, fault_rate: float = 0.0, faults=("429", "503", "timeout"), hang: float = 3.0,
                 delay: float = 0.0, token: str | None = None, served_model: str | None = None,
                 refuse_marker: str | None = None, seed: int = 0):
        self.upstream = upstream.rstrip("/")
        self.fault_rate = fault_rate
        self.faults = list(faults)
        self.hang = hang
        self.delay = delay
        self.token = token
        self.served_model = served_model
        self.refuse_marker = refuse_marker
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.forwarded: list[str] = []
        self.outcomes: Counter = Counter()
        self.auth_headers: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # forwarded as it is, errors included (GET /info is 404 on transformers serve)
                try:
                    with urllib.request.urlopen(proxy.upstream + self.path, timeout=10) as r:
                        status, data = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, data = e.code, e.read()
                self._send(status, data)

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
            return self._answer(handler, "404", 404,
                                {"object": "error", "message": msg, "type": "NotFoundError", "code": 404})
        if self.refuse_marker is not None and self.refuse_marker in str(payload.get("prompt", "")):
            msg = "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096."
            return self._answer(handler, "422", 422, {"error": msg, "error_type": "validation"})
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


class LogprobServer:
    """A test double of the three logprob formats the engine reads (``transformers serve`` returns none):
    vLLM's ``/v1/completions`` with ``logprobs: N``, the chat route's ``top_logprobs`` and TGI's native
    ``top_n_tokens``. The numbers are the real next-token log-probabilities of ``engine``'s model (the prompt
    is used as is on every route)."""

    def __init__(self, engine):
        import torch

        server = self

        def top(prompt: str, n: int) -> list[tuple[str, float]]:
            tok = engine.tokenizer
            with torch.inference_mode():
                logits = engine.model(**tok(prompt, return_tensors="pt")).logits[0, -1].float()
            values, ids = torch.log_softmax(logits, -1).topk(n)
            return [(tok.decode([i]), v) for i, v in zip(ids.tolist(), values.tolist())]

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
                server.paths.append(self.path)
                if self.path == "/v1/completions":
                    alts = top(body["prompt"], body["logprobs"])
                    out = {"choices": [{"text": alts[0][0], "logprobs": {"top_logprobs": [dict(alts)]}}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
                elif self.path == "/v1/chat/completions":
                    alts = top(body["messages"][0]["content"], body["top_logprobs"])
                    out = {"id": "x", "created": 0, "model": body["model"], "object": "chat.completion",
                           "system_fingerprint": "",
                           "choices": [{"index": 0, "finish_reason": "length",
                                        "message": {"role": "assistant", "content": alts[0][0]},
                                        "logprobs": {"content": [{"token": alts[0][0], "logprob": alts[0][1],
                                                                  "top_logprobs": [{"token": t, "logprob": v}
                                                                                   for t, v in alts]}]}}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                else:  # TGI's native /generate route
                    alts = top(body["inputs"], body["parameters"]["top_n_tokens"])
                    tokens = [{"id": 0, "text": t, "logprob": v, "special": False} for t, v in alts]
                    out = {"generated_text": alts[0][0],
                           "details": {"finish_reason": "length", "generated_tokens": 1,
                                       "prefill": [], "tokens": tokens[:1], "top_tokens": [tokens]}}
                data = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.paths: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ModelServer:
    """A loopback server that says (or not) which model it serves, and answers every generation.

    Args:
        models: ids listed by ``GET /v1/models`` (vLLM, SGLang); 404 when ``None``.
        info: ``model_id`` of ``GET /info`` (TGI); 404 when ``None``.
        on_demand: list the models the way an unpinned ``transformers serve`` does (with a ``status``).
        garbled: answer ``GET /v1/models`` and ``GET /info`` with 200 and a body that is not JSON.
        text: the answer to every generation, or ``text(request_body) -> str`` (a scripted judge).

    ``gets`` lists the paths of the GETs; ``posts`` the ``(path, body)`` of the POSTs (the rows sent).
    """

    def __init__(self, models: list[str] | None = None, info: str | None = None, on_demand: bool = False,
                 garbled: bool = False, text="Habari."):
        self.gets: list[str] = []
        self.posts: list[tuple[str, dict]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.gets.append(self.path)
                if garbled and self.path in ("/v1/models", "/info"):
                    return self._send(200, b"<html>not json</html>")
                if self.path == "/v1/models" and models is not None:
                    status = {"status": {"value": "unloaded"}} if on_demand else {}
                    data = [{"id": m, "object": "model", "owned_by": "test", **status} for m in models]
                    return self._send(200, json.dumps({"object": "list", "data": data}).encode())
                if self.path == "/info" and info is not None:
                    return self._send(200, json.dumps({"model_id": info, "max_input_tokens": 4095}).encode())
                self._send(404, b'{"detail": "Not Found"}')

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
                server.posts.append((self.path, body))
                answer = text(body) if callable(text) else text
                choice = {"message": {"role": "assistant", "content": answer}} if "chat" in self.path else \
                    {"text": answer}
                usage = {"prompt_tokens": 3, "completion_tokens": 2}
                self._send(200, json.dumps({"choices": [choice], "usage": usage}).encode())

            def _send(self, status: int, data: bytes):
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
