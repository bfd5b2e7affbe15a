"""Dispatch and failures of the endpoint engine's requests (see :mod:`xinstruct.inference.endpoint`).

- :class:`Dispatcher` holds the in-flight state of one call (rows still to send, requests in flight per base URL)
  and picks the base URL of the next request.
- :func:`classify` maps a client exception to :class:`Retryable` (retry it), :class:`RowRefused` (that row fails
  alone) or :class:`~xinstruct.errors.EndpointError` (stop).
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import httpx2
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

from ..errors import EndpointError

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


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
