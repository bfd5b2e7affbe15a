"""Where and how the endpoint engine's requests go (see :mod:`xinstruct.inference.endpoint`).

- **Routes**: one class per server route, with the request body of a payload (:meth:`Route.body`) and the reading
  of the answer (:meth:`Route.parse`). Adding a route is one class and one line in :data:`ROUTES`.
- **Dispatch**: :class:`Dispatcher` holds the in-flight state of one call (rows still to send, requests in
  flight per base URL) and picks the base URL of the next request.
- **Failures**: :func:`classify` maps a client exception to :class:`Retryable` (retry it), :class:`RowRefused`
  (that row fails alone) or :class:`~xinstruct.errors.EndpointError` (stop).
- **Served model**: :func:`served_models` asks a server which model(s) it serves (``GET /v1/models``, then TGI's
  ``GET /info``) and :func:`check_served` stops if the expected model is not among them.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx2
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

from ..errors import EndpointError

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}

Usage = dict[str, int]


class NoLogprobs(Exception):
    """The answer carries no alternatives to score options with (the engine says which route to use instead)."""


class Route:
    """One server route of the endpoint engine.

    A payload (see ``EndpointEngine._payload``) holds ``route``, ``model``, ``prompt``, the decoding fields, an
    optional ``system`` message and, when scoring, ``top_logprobs``. Subclasses set :attr:`name` and :attr:`path`
    and implement :meth:`body` and :meth:`parse`; :data:`ROUTES` registers them by name.
    """

    name: ClassVar[str]
    path: ClassVar[str]
    #: payload entries that are not sent as they are
    RESERVED: ClassVar[tuple[str, ...]] = ("key", "route", "model", "prompt", "system", "top_logprobs")

    def body(self, request: dict[str, Any]) -> dict[str, Any]:
        """The JSON body sent to :attr:`path` for ``request`` (generation, or scoring with ``top_logprobs``)."""
        raise NotImplementedError

    def parse(self, data: Any, scoring: bool) -> tuple[Any, Usage]:
        """``(text, usage)``, or ``(alternatives, usage)`` when scoring (token -> log-probability of the first
        generated token). Raises :class:`NoLogprobs` for an answer without alternatives, and ``KeyError``,
        ``IndexError``, ``TypeError``, ``AttributeError`` or ``ValueError`` for a malformed one."""
        raise NotImplementedError

    def piece(self, choice: dict[str, Any]) -> str:
        """The text of one streamed chunk's choice."""
        return choice.get("text") or ""

    @classmethod
    def fields(cls, request: dict[str, Any]) -> dict[str, Any]:
        """The decoding fields of ``request`` (and any ``extra_body``), sent as they are."""
        return {k: v for k, v in request.items() if k not in cls.RESERVED}

    @staticmethod
    def usage(data: dict[str, Any]) -> Usage:
        """Token counts of an OpenAI-style answer (0 where the server does not say)."""
        return {k: int((data.get("usage") or {}).get(k) or 0) for k in ("prompt_tokens", "completion_tokens")}


class CompletionsRoute(Route):
    """``/v1/completions``: the prompt is sent byte for byte; scoring reads ``logprobs`` (vLLM, SGLang)."""

    name = "completions"
    path = "/v1/completions"

    def body(self, request: dict[str, Any]) -> dict[str, Any]:
        body = {"model": request["model"], "prompt": request["prompt"], **self.fields(request)}
        if "top_logprobs" in request:
            body["logprobs"] = request["top_logprobs"]
        return body

    def parse(self, data: Any, scoring: bool) -> tuple[Any, Usage]:
        usage = self.usage(data)
        choice = data["choices"][0]
        if not scoring:
            return _text(choice["text"]), usage
        top = (choice.get("logprobs") or {}).get("top_logprobs") or []
        if not top or not top[0]:
            raise NoLogprobs
        return dict(top[0]), usage


class ChatRoute(Route):
    """``/v1/chat/completions``: the prompt is one user message (after the optional system message), framed by
    the server's chat template; scoring reads ``logprobs`` + ``top_logprobs``."""

    name = "chat"
    path = "/v1/chat/completions"

    def body(self, request: dict[str, Any]) -> dict[str, Any]:
        system = [{"role": "system", "content": request["system"]}] if request.get("system") else []
        messages = [*system, {"role": "user", "content": request["prompt"]}]
        body = {"model": request["model"], "messages": messages, **self.fields(request)}
        if "top_logprobs" in request:
            body.update(logprobs=True, top_logprobs=request["top_logprobs"])
        return body

    def parse(self, data: Any, scoring: bool) -> tuple[Any, Usage]:
        usage = self.usage(data)
        choice = data["choices"][0]
        if not scoring:
            return _text(choice["message"]["content"]), usage
        content = (choice.get("logprobs") or {}).get("content") or []
        if not content or not content[0].get("top_logprobs"):
            raise NoLogprobs
        return {t["token"]: t["logprob"] for t in content[0]["top_logprobs"]}, usage

    def piece(self, choice: dict[str, Any]) -> str:
        return (choice.get("delta") or {}).get("content") or ""


class GenerateRoute(Route):
    """TGI's native ``/generate`` (scoring only): one greedy token with its ``top_n_tokens`` alternatives (TGI's
    ``/v1/completions`` has no logprobs)."""

    name = "generate"
    path = "/generate"

    def body(self, request: dict[str, Any]) -> dict[str, Any]:
        parameters = {"max_new_tokens": 1, "details": True, "do_sample": False,
                      "top_n_tokens": request["top_logprobs"]}
        return {"inputs": request["prompt"], "parameters": parameters}

    def parse(self, data: Any, scoring: bool) -> tuple[Any, Usage]:
        if isinstance(data, list):  # TGI's "/" route answers a list of one
            data = data[0]
        details = data["details"]
        usage = {"prompt_tokens": 0, "completion_tokens": int(details.get("generated_tokens") or 1)}
        top = details.get("top_tokens")
        if not top:
            raise NoLogprobs
        return {t["text"]: t["logprob"] for t in top[0]}, usage


#: route name (``engine.route`` / ``engine.score_route``) -> route class
ROUTES: dict[str, type[Route]] = {
    CompletionsRoute.name: CompletionsRoute,
    ChatRoute.name: ChatRoute,
    GenerateRoute.name: GenerateRoute,
}


def get_route(name: str) -> Route:
    """The route registered as ``name``."""
    if name not in ROUTES:
        raise ValueError(f"Unknown endpoint route {name!r}; use one of {', '.join(ROUTES)}.")
    return ROUTES[name]()


def _text(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text is {type(text).__name__}")
    return text.strip()


def stream_pieces(lines: Iterable[str | bytes], route: Route) -> Iterator[str]:
    """Text pieces of a streamed answer (SSE ``data:`` lines, ``[DONE]`` at the end)."""
    for line in lines:
        line = line.strip() if isinstance(line, str) else line.decode().strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        chunk = json.loads(data)
        if "error" in chunk:
            raise ValueError(f"server error in stream: {chunk['error']}")
        if chunk.get("choices"):
            yield route.piece(chunk["choices"][0])


def option_probs(alternatives: dict[str, float], options: list[str]) -> tuple[list[float], int]:
    """Renormalised probabilities of ``options`` and how many of them the alternatives miss. A missing option
    gets the lowest listed log-probability (an upper bound of its own); with none of them listed the
    probabilities are uniform."""
    floor = min(alternatives.values())
    logps = [alternatives.get(option, floor) for option in options]
    top = max(logps)
    weights = [math.exp(lp - top) for lp in logps]
    total = sum(weights)
    return [w / total for w in weights], sum(option not in alternatives for option in options)


class Retryable(Exception):
    """A failure worth retrying; ``kind`` is what is counted (``http-429``, ``timeout``, ...)."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


class RowRefused(EndpointError):
    """A request the server refuses on its own (400, 413, 422: e.g. a prompt over its input limit): not
    retried, recorded as that row's failure; the other rows go on."""


def classify(url: str, error: Exception, timeout: float, token_env: str | None, model: str) -> Exception:
    """Map a client exception to :class:`Retryable` (retry it), :class:`RowRefused` or :class:`EndpointError`
    (stop); other exceptions are raised as they are."""
    if isinstance(error, (Retryable, EndpointError)):
        return error
    if isinstance(error, InferenceTimeoutError):
        return Retryable("timeout", f"{url} did not answer within {timeout}s")
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        return _http_error(url, error, token_env, model)
    if isinstance(error, (httpx2.TransportError, OSError)):
        return Retryable("connection", f"cannot reach {url}: {type(error).__name__}: {error}")
    if isinstance(error, (json.JSONDecodeError, UnicodeDecodeError)):
        return Retryable("malformed", f"{url} answered with malformed JSON ({error})")
    if isinstance(error, (ValueError, KeyError, TypeError)):
        return Retryable("malformed", f"{url} answered with something that is not a valid completion: {error}")
    raise error


def _http_error(url: str, error: HfHubHTTPError, token_env: str | None, model: str) -> Exception:
    status = error.response.status_code
    detail = error.response.text[:300]
    if status in RETRYABLE_STATUS:
        retry_after = error.response.headers.get("retry-after")
        try:
            seconds = float(retry_after) if retry_after else None
        except ValueError:
            seconds = None
        return Retryable(f"http-{status}", f"{url} answered {status}: {detail}", seconds)
    if status in (401, 403):
        return EndpointError(
            f"{url} refused the request ({status}): {detail}. Set {token_env} (engine.token_env) to a "
            "token this server accepts."
        )
    if status in (400, 413, 422):
        hint = ""
        if "min_tokens" in detail or "repetition_penalty" in detail:
            hint = (" This server does not take min_tokens/repetition_penalty: set decoding.min_new_tokens: 0 "
                    "and repetition_penalty: 1.0.")
        return RowRefused(
            f"{url} refused the request ({status}): {detail}.{hint} (A prompt longer than the server accepts is "
            "refused on its own: raise TGI's --max-input-tokens / vLLM's --max-model-len or lower "
            "data.filters.max_chars.)"
        )
    if status == 404:
        return EndpointError(
            f"{url} answered 404 for model {model!r}: {detail}. Check engine.model against the name the "
            "server serves (vLLM: --served-model-name; TGI accepts any) and the URL (a server root, no /v1)."
        )
    return EndpointError(f"{url} refused the request ({status}): {detail}.")


class Dispatcher:
    """The in-flight state of one call: the rows still to send (:attr:`pending`, shared by the workers), the
    requests in flight per base URL, and the pick policy (``least-busy``: the URL with the fewest requests in
    flight, ties broken in turn; ``round-robin``: each URL in turn). Also counts the answers, their tokens and
    the failed rows, for the progress bar and the call's outcome."""

    def __init__(self, urls: list[str], balance: str, pending: Iterable[int]):
        self.urls = list(urls)
        self.balance = balance
        self.pending: Iterator[int] = iter(pending)
        self.in_flight: Counter[str] = Counter({url: 0 for url in self.urls})
        self._cycle = itertools.cycle(self.urls)
        self.started = time.perf_counter()
        self.answered = 0
        self.tokens = 0
        self.failures: list[tuple[int, str]] = []

    def pick(self) -> str:
        """The base URL of the next request."""
        if self.balance == "round-robin":
            return next(self._cycle)
        start = self.urls.index(next(self._cycle))  # rotate the tie-break so equal loads spread
        order = self.urls[start:] + self.urls[:start]
        return min(order, key=lambda url: self.in_flight[url])

    @contextmanager
    def slot(self) -> Iterator[str]:
        """Pick a base URL and count one request in flight there while the block runs."""
        url = self.pick()
        self.in_flight[url] += 1
        try:
            yield url
        finally:
            self.in_flight[url] -= 1

    def answer(self, completion_tokens: int) -> None:
        """Count one answered row."""
        self.answered += 1
        self.tokens += completion_tokens

    def rates(self) -> dict[str, str]:
        """Rows and completion tokens per second so far (the progress bar's postfix)."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        return {"rows_s": f"{self.answered / elapsed:.1f}", "tok_s": f"{self.tokens / elapsed:.0f}"}


@dataclass
class Served:
    """What a server says it serves: ``names`` (from ``source``, e.g. ``GET /v1/models``); ``on_demand`` when it
    loads whatever model a request names (an unpinned ``transformers serve``: its list is what it can load)."""

    names: list[str]
    source: str
    on_demand: bool = False


def served_models(url: str, headers: dict[str, str], timeout: float) -> Served | None:
    """Ask the server at ``url`` which model(s) it serves: ``GET /v1/models`` (``data[].id``: vLLM, SGLang, TGI,
    ``transformers serve``), then TGI's ``GET /info`` (``model_id``). ``None`` when neither says (an error
    status, no such route, an answer without names). A server that cannot be reached raises
    ``httpx2.TransportError``."""
    with httpx2.Client(timeout=timeout, headers=headers) as client:
        for path, read in (("/v1/models", _listed), ("/info", _info)):
            response = client.get(url + path)
            if response.status_code != 200:
                continue
            try:
                served = read(response.json(), f"GET {url}{path}")
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                continue
            if served is not None:
                return served
    return None


def _listed(data: Any, source: str) -> Served | None:
    entries = [entry for entry in data["data"] if isinstance(entry, dict)]
    names = [entry["id"] for entry in entries if isinstance(entry.get("id"), str)]
    # `status` ({"value": "loaded" | "unloaded"}) is transformers serve's: it loads any model a request names,
    # and a pinned one refuses other names itself
    on_demand = any(isinstance(entry.get("status"), dict) for entry in entries)
    return Served(names, source, on_demand) if names else None


def _info(data: Any, source: str) -> Served | None:
    name = data["model_id"]
    return Served([name], source) if isinstance(name, str) and name else None


def check_served(url: str, expected: str, served: Served | None) -> None:
    """Raise :class:`EndpointError` naming both models and ``url`` when ``served`` lists models and ``expected``
    is not among them; a server that does not say (``None``) gets a warning."""
    if served is None:
        logger.warning("%s does not say which model it serves (no GET /v1/models or /info): the engine cannot "
                       "check that it serves %r.", url, expected)
    elif serves(expected, served.names):
        logger.debug("%s serves %r (%s)", url, expected, served.source)
    elif served.on_demand:
        logger.info("%s does not list %r but loads the model a request names (%s).", url, expected, served.source)
    else:
        listed = ", ".join(repr(name) for name in served.names[:10])
        more = f" and {len(served.names) - 10} more" if len(served.names) > 10 else ""
        raise EndpointError(
            f"{url} serves {listed}{more} ({served.source}), not the expected model {expected!r} (engine.model). "
            "Point engine.base_urls at a server of that model or set engine.model to the name it serves; nothing "
            "was sent (check_model=False skips this check)."
        )


def serves(expected: str, names: Iterable[str]) -> bool:
    """Whether ``expected`` is among the served ``names``: the same name, or the same after stripping a trailing
    slash, or the same folder on this machine; ``org/model:policy`` (a router's provider suffix) matches
    ``org/model``."""
    names = list(names)
    if any(_same(expected, name) for name in names):
        return True
    base, _, suffix = expected.rpartition(":")
    return bool(base) and "/" not in suffix and any(_same(base, name) for name in names)


def _same(a: str, b: str) -> bool:
    a, b = a.rstrip("/") or a, b.rstrip("/") or b
    if a == b:
        return True
    return os.path.isdir(a) and os.path.isdir(b) and os.path.realpath(a) == os.path.realpath(b)
