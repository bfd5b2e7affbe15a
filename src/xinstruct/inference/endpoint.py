"""Engine over OpenAI-compatible servers (TGI, vLLM, SGLang, Inference Endpoints, ``transformers serve``),
through :class:`huggingface_hub.AsyncInferenceClient`.

- **Bounded concurrency that keeps servers busy.** ``concurrency`` workers per base URL pull the next
  request as soon as theirs is answered: requests stream in as slots free up, never batch by batch.
- **Several base URLs** are used together, least-busy first (or round-robin); a retry may go to another one.
- **Retries** with exponential backoff and full jitter on 429, 5xx, timeouts, connection errors and
  malformed answers (``Retry-After`` is honoured). 401, 403 and 404 are not retried and stop the call at once
  with the server's reason (every other request would fail the same way). 400, 413 and 422 are refused
  requests of their own (a prompt over the server's input limit): not retried, recorded as that row's
  failure, unless no request of the call has been answered yet (then the call stops: e.g. a field the server
  does not know).
- **Token**: the value of ``token_env`` (default ``HF_TOKEN``) when that variable is set, otherwise none; a
  saved ``hf auth login`` is never sent to a server.
- **Replay** (with a :class:`~xinstruct.inference.replay.ReplayStore`): each answer is stored as it arrives,
  keyed by the request's content, so a killed run re-sends nothing that was answered. Requests that still
  fail after all retries are recorded with their error and the call raises :class:`EndpointError` once the
  others are done; the next run sends only those again.

Routes. Generation uses ``/v1/completions`` by default: the prompt is sent byte for byte, which the
X-Instruction templates need (``route: chat`` sends it as one user message instead). Scoring reads the
options' probabilities from the first generated token's alternatives: ``logprobs`` on ``/v1/completions``
(vLLM, SGLang), ``top_n_tokens`` on TGI's native route (``score_route: generate``; TGI's ``/v1/completions``
has no logprobs) or ``logprobs`` + ``top_logprobs`` on ``/v1/chat/completions`` (``score_route: chat``,
which frames the prompt with the chat template). ``transformers serve`` (5.x) ignores ``logprobs``: score
with a local engine or another server. Each route is a class in :mod:`xinstruct.inference.routes`.

Served model. Before a call sends its first request, the engine asks each server which model(s) it serves
(``GET /v1/models``, then TGI's ``GET /info``; once per base URL and engine) and stops with
:class:`EndpointError` when ``model`` is not among them: TGI ignores ``model=`` and would answer with whatever
it serves. A server that does not say is used with a warning; an unpinned ``transformers serve`` lists what it
can load and loads what a request names. ``model: tgi`` and ``check_model=False`` skip the check.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
from huggingface_hub import AsyncInferenceClient, InferenceClient, constants
from huggingface_hub.inference._common import RequestParameters
from huggingface_hub.utils import build_hf_headers
from tqdm.auto import tqdm

from ..errors import EndpointError
from ..models import resolve_model
from . import routes
from .base import Engine, GenerationParams
from .dispatch import Dispatcher, Retryable, RowRefused, classify
from .endpoint_config import EndpointConfig
from .replay import ReplayStore, request_key
from .routes import NoLogprobs, Route
from .served import Served, check_served, served_models

logger = logging.getLogger(__name__)


# the EndpointConfig fields an engine keeps as attributes (base_urls, model, extra_body are set apart)
_SETTINGS = ("route", "score_route", "top_logprobs", "concurrency", "balance", "timeout", "max_retries", "backoff",
             "backoff_max", "token_env", "system_prompt", "check_model")


class EndpointEngine(Engine):
    """Inference through one or more OpenAI-compatible servers.

    Args:
        base_urls (`list[str]`): server roots, e.g. ``["http://127.0.0.1:8080"]``.
        model (`str`): sent as ``model=`` in every request.
        store (`ReplayStore`, *optional*): stored answers; without one nothing is replayed.
        progress (`bool`, defaults to `True`): progress bar with rows/s and tokens/s.
        settings: any field of :class:`~xinstruct.inference.endpoint_config.EndpointConfig` (``route``,
            ``score_route``, ``concurrency``, ``max_retries``, ``token_env``, ``system_prompt``, ``check_model``...),
            documented there once; the same defaults.
    """

    name = "endpoint"

    def __init__(self, base_urls: list[str], model: str, store: ReplayStore | None = None, progress: bool = True,
                 **settings: Any):
        if not base_urls:
            raise ValueError("An endpoint engine needs at least one base URL.")
        config = EndpointConfig(base_urls=list(base_urls), model=model, **settings)  # an unknown setting: TypeError
        routes.get_route(config.route), routes.get_route(config.score_route)  # known names, or a ValueError
        self.base_urls = [url.rstrip("/") for url in base_urls]
        self.model = model
        for name in _SETTINGS:
            setattr(self, name, getattr(config, name))
        self.extra_body = dict(config.extra_body or {})
        self.store = store
        self.progress = progress
        self.served: dict[str, Served | None] = {}  # base URL -> what it said it serves (checked URLs only)
        self.stats: dict[str, Any] = {
            "requests": 0, "sent": 0, "replayed": 0, "answered": 0, "retries": 0, "retries_by_kind": {},
            "failed": 0, "prompt_tokens": 0, "completion_tokens": 0, "options_missing": 0, "seconds": 0.0,
        }

    def close(self) -> None:
        """Close the replay store's files."""
        if self.store is not None:
            self.store.close()

    def generate(self, prompts: list[str], params: GenerationParams) -> list[str]:
        """One continuation per prompt (see :meth:`Engine.generate`); ``params.seed`` goes into every request."""
        fields = self._decoding_fields(params)
        requests = [self._payload(self.route, prompt, fields) for prompt in prompts]
        return asyncio.run(self._run(requests, "generate"))

    def stream(self, prompt: str, params: GenerationParams) -> Iterator[str]:
        """Yield text pieces as the server streams them (SSE). Failures before the first piece are retried
        like any request (on the next base URL); a stream cut after it raises :class:`EndpointError`.
        Nothing is stored. Closing the generator closes the HTTP stream."""
        self._check_online()
        self._check_models()
        request = {**self._payload(self.route, prompt, self._decoding_fields(params)), "stream": True}
        for attempt in range(self.max_retries + 1):
            url = self.base_urls[self.stats["sent"] % len(self.base_urls)]
            self.stats["sent"] += 1
            started = False
            try:
                with InferenceClient(base_url=url, timeout=self.timeout) as client:
                    lines = client._inner_post(self._request(url, request), stream=True)
                    for piece in routes.stream_pieces(lines, routes.get_route(self.route)):
                        if piece:
                            started = True
                            yield piece
                return
            except Exception as error:  # noqa: BLE001 - classified below
                mapped = self._classify(url, error)
                if started:
                    raise EndpointError(f"The stream from {url} broke off: {mapped}") from None
                if not isinstance(mapped, Retryable):
                    raise mapped from None
                if attempt == self.max_retries:
                    raise EndpointError(f"No answer from {url} after {self.max_retries} retries: {mapped}") from None
                self.stats["retries"] += 1
                time.sleep(self._delay(attempt, mapped))

    def score(self, prompts: list[str], options: list[str]) -> list[list[float]]:
        """Probabilities of each option as the next token, from the server's top alternatives, renormalised
        over the options (see :meth:`Engine.score`). An option missing from the alternatives counts as 0."""
        if len(set(options)) != len(options):
            raise ValueError(f"Score options {options} repeat.")
        if self.top_logprobs < len(options):
            raise ValueError(
                f"top_logprobs={self.top_logprobs} cannot show {len(options)} options; raise engine.top_logprobs."
            )
        fields = {"max_tokens": 1, "temperature": 0.0, "top_logprobs": self.top_logprobs}
        requests = [self._payload(self.score_route, prompt, fields) for prompt in prompts]
        scored = [routes.option_probs(alt, options) for alt in asyncio.run(self._run(requests, "score"))]
        self.stats["options_missing"] += sum(missing for _, missing in scored)  # see routes.option_probs
        return [probs for probs, _ in scored]

    @staticmethod
    def _decoding_fields(params: GenerationParams) -> dict[str, Any]:
        fields: dict[str, Any] = {"max_tokens": params.max_new_tokens, "seed": params.seed}
        if params.do_sample:
            fields["temperature"] = params.temperature
            if params.top_p < 1.0:  # 1.0 changes nothing, and TGI refuses it (422: top_p must be < 1)
                fields["top_p"] = params.top_p
        else:
            fields["temperature"] = 0.0
        # Not OpenAI fields: only sent when set (vLLM and TGI know them; transformers serve refuses them).
        if params.min_new_tokens:
            fields["min_tokens"] = params.min_new_tokens
        if params.repetition_penalty != 1.0:
            fields["repetition_penalty"] = params.repetition_penalty
        return fields

    def _payload(self, route: str, prompt: str, fields: dict[str, Any]) -> dict[str, Any]:
        payload = {"route": route, "model": self.model, "prompt": prompt, **fields, **self.extra_body}
        if route == "chat" and self.system_prompt:
            payload["system"] = self.system_prompt
        return {"key": request_key(payload), **payload}

    @staticmethod
    def _check_online() -> None:
        if constants.is_offline_mode():
            raise EndpointError(
                "HF_HUB_OFFLINE is set, and huggingface_hub's inference client then refuses every request, even to a "
                "server on this machine. Unset HF_HUB_OFFLINE for runs with an endpoint engine (models in local "
                "folders load without the Hub either way)."
            )

    def _check_models(self) -> None:
        """Stop with :class:`EndpointError` if a base URL serves another model than :attr:`model` (see the module
        docstring). A URL is asked until its answer passes (an unreachable one again on the next call)."""
        if not self.check_model or self.model == "tgi":
            if self.check_model:
                logger.debug("model 'tgi': TGI answers with whatever it serves; not checked")
            return
        for url in self.base_urls:
            if url in self.served:
                continue
            try:
                served = served_models(url, self._headers(), self.timeout)
            except httpx2.TransportError as error:
                logger.debug("cannot ask %s which model it serves (%s: %s)", url, type(error).__name__, error)
                continue
            check_served(url, self.model, served)
            self.served[url] = served

    def _request(self, url: str, request: dict[str, Any]) -> RequestParameters:
        """The HTTP request of one payload, sent through the inference client's transport (``_inner_post``:
        AsyncInferenceClient has no public method for ``/v1/completions``, and building every route here
        keeps one rule for the token: the ``token_env`` variable's value when set, otherwise no token at all,
        so a saved Hugging Face login never goes to a third-party server)."""
        route = routes.get_route(request["route"])
        return RequestParameters(url=url + route.path, task="text-generation", model=request["model"],
                                 json=route.body(request), data=None, headers=self._headers())

    def _headers(self) -> dict[str, str]:
        """The ``token_env`` variable's value as the bearer token when it is set; otherwise no token at all."""
        token = (os.environ.get(self.token_env) or None) if self.token_env else None
        return build_hf_headers(token=token or False)

    def _delay(self, attempt: int, failure: Retryable) -> float:
        """Full-jitter exponential backoff, at least the server's ``Retry-After`` (capped)."""
        delay = random.uniform(0, min(self.backoff_max, self.backoff * 2**attempt))
        if failure.retry_after is not None:
            delay = max(delay, min(failure.retry_after, self.backoff_max))
        return delay

    async def _run(self, requests: list[dict[str, Any]], what: str) -> list[Any]:
        """Answer every request (stored ones from the store), ``concurrency`` in flight per base URL."""
        started = time.perf_counter()
        results: list[Any] = [None] * len(requests)
        todo = []
        for i, request in enumerate(requests):
            if self.store is not None and request["key"] in self.store:
                results[i] = self.store.get(request["key"])
                self.stats["replayed"] += 1
            else:
                todo.append(i)
        self.stats["requests"] += len(requests)
        if not todo:
            return results
        self._check_online()
        self._check_models()
        call = Dispatcher(self.base_urls, self.balance, todo)
        clients = {url: AsyncInferenceClient(base_url=url, timeout=self.timeout) for url in self.base_urls}
        bar = tqdm(total=len(requests), initial=len(requests) - len(todo), desc=what, unit="row",
                   disable=not self.progress, leave=False)
        workers = [asyncio.create_task(self._worker(call, requests, results, clients, bar))
                   for _ in range(self.concurrency * len(self.base_urls))]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        finally:
            bar.close()
            for client in clients.values():
                await client.close()
            self.stats["seconds"] += time.perf_counter() - started
        if call.failures:
            where = f"; their errors are in {self.store.failures_path}" if self.store is not None else ""
            raise EndpointError(
                f"{len(call.failures)} of {len(requests)} requests failed (after up to {self.max_retries} retries) "
                f"(first: {call.failures[0][1]}){where}. The {len(requests) - len(call.failures)} others are answered"
                + (" and stored; run again to send only the failed ones." if self.store is not None else ".")
            )
        return results

    async def _worker(self, call: Dispatcher, requests: list[dict[str, Any]], results: list[Any],
                      clients: dict[str, AsyncInferenceClient], bar: tqdm) -> None:
        """Send the call's pending rows one after the other until none is left."""
        for i in call.pending:
            request = requests[i]
            try:
                answer, usage = await self._with_retries(request, clients, call)
            except (Retryable, RowRefused) as error:
                self._failed(call, i, request, error)
                continue
            if self.store is not None:
                self.store.put(request["key"], answer)
            results[i] = answer
            call.answer(usage.get("completion_tokens", 0))
            self.stats["answered"] += 1
            self.stats["prompt_tokens"] += usage.get("prompt_tokens", 0)
            self.stats["completion_tokens"] += usage.get("completion_tokens", 0)
            bar.set_postfix(call.rates(), refresh=False)
            bar.update(1)

    def _failed(self, call: Dispatcher, i: int, request: dict[str, Any], error: Exception) -> None:
        """Record row ``i``'s failure; stop the call if none of its requests was answered yet."""
        call.failures.append((i, str(error)))
        self.stats["failed"] += 1
        if self.store is not None:
            self.store.fail(request["key"], str(error), getattr(error, "attempts", 1))
        if call.answered:
            return
        where = f" (answers so far are stored in {self.store.folder})" if self.store is not None else ""
        if isinstance(error, RowRefused):
            raise EndpointError(f"{error} No request of this call was answered, so it stops here; "
                                f"nothing was lost{where}.") from None
        raise EndpointError(
            f"No answer from {', '.join(self.base_urls)} after {self.max_retries} retries: {error}. "
            f"Check that the server is up and reachable (engine.base_urls); nothing was lost{where}."
        ) from None

    async def _with_retries(self, request: dict[str, Any], clients: dict[str, AsyncInferenceClient],
                            call: Dispatcher) -> tuple[Any, dict[str, int]]:
        for attempt in range(self.max_retries + 1):
            with call.slot() as url:
                self.stats["sent"] += 1
                try:
                    return await self._send(clients[url], url, request)
                except Retryable as error:
                    failure = error
                except RowRefused as error:
                    error.attempts = attempt + 1
                    raise
            if attempt == self.max_retries:
                failure.attempts = attempt + 1
                raise failure
            self.stats["retries"] += 1
            kinds = self.stats["retries_by_kind"]
            kinds[failure.kind] = kinds.get(failure.kind, 0) + 1
            delay = self._delay(attempt, failure)
            logger.debug("retrying after %s (%.2fs): %s", failure.kind, delay, failure)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _send(self, client: AsyncInferenceClient, url: str,
                    request: dict[str, Any]) -> tuple[Any, dict[str, int]]:
        """One HTTP request; returns (answer, usage). Raises :class:`Retryable`, :class:`RowRefused` or
        :class:`EndpointError`."""
        try:
            data = json.loads(await client._inner_post(self._request(url, request)))
        except Exception as error:  # noqa: BLE001 - classified below
            raise self._classify(url, error) from None
        return self._parse(url, routes.get_route(request["route"]), "top_logprobs" in request, data)

    def _classify(self, url: str, error: Exception) -> Exception:
        """Map a client exception to :class:`Retryable` (retry it) or :class:`EndpointError` (stop)."""
        return classify(url, error, self.timeout, self.token_env, self.model)

    def _parse(self, url: str, route: Route, scoring: bool, data: Any) -> tuple[Any, dict[str, int]]:
        try:
            return route.parse(data, scoring)
        except NoLogprobs:
            raise self._no_logprobs(url) from None
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as error:
            raise Retryable(
                "malformed", f"{url} answered without the expected fields ({type(error).__name__}: {error})"
            ) from None

    def _no_logprobs(self, url: str) -> EndpointError:
        return EndpointError(
            f"{url} returned no logprobs on the {self.score_route!r} route, so options cannot be scored. Use "
            "score_route: completions for vLLM/SGLang, generate or chat for TGI; transformers serve ignores "
            "logprobs, so score with a local engine there (e.g. refinement.evaluator.engine: {type: local})."
        )


def build_endpoint_engine(config: EndpointConfig, model: str, requests_dir: str | Path | None = None,
                          progress: bool = True) -> EndpointEngine:
    """The endpoint engine ``config`` describes (the builder :data:`~xinstruct.inference.ENGINES` registers for
    ``endpoint``); ``model`` is the default ``model=`` (built-in names are resolved and local paths made absolute, so
    a ``transformers serve`` on this machine can load it)."""
    if config.model is None:
        model = resolve_model(model, loads_here=False)  # the built-in names become local folders
        if Path(model).exists():
            model = str(Path(model).resolve())
    store = ReplayStore(requests_dir) if requests_dir is not None else None
    settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                if f.name not in ("type", "dtype", "max_input_tokens", "base_urls", "model")}
    return EndpointEngine(config.base_urls, config.model or model, store=store, progress=progress, **settings)
