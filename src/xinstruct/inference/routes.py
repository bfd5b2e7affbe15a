"""The routes of the endpoint engine (see :mod:`xinstruct.inference.endpoint`): one class per server route, with
the request body of a payload (:meth:`Route.body`) and the reading of the answer (:meth:`Route.parse`). Adding a
route is one class and one line in :data:`ROUTES`. Failures are classified in :mod:`.dispatch`, the served model is
checked in :mod:`.served`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

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
