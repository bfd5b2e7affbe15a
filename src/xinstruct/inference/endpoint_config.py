"""The settings of the endpoint engine (``engine: {type: endpoint, ...}``): OpenAI-compatible servers such as TGI,
vLLM, SGLang, Inference Endpoints and ``transformers serve`` (:mod:`xinstruct.inference.endpoint`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import RecipeError
from ..schema import check_choice
from .base import EngineConfig


@dataclass
class EndpointConfig(EngineConfig):
    """Requests to OpenAI-compatible servers; see :class:`EngineConfig` for ``dtype`` and ``max_input_tokens``.
    Settings that change only speed (URLs, concurrency, retries) are not part of any step hash.

    Args:
        base_urls (`list[str]`): server roots (``http://127.0.0.1:8080``), used together.
        model (`str`, *optional*): the ``model=`` of every request (vLLM checks it against its served name; TGI
            ignores it; ``transformers serve`` loads it). Default: the role's model path or Hub id.
        route (`str`, *optional*, defaults to `"completions"`): generation route: ``completions``
            (``/v1/completions``, the prompt is sent byte for byte) or ``chat`` (``/v1/chat/completions``, the
            prompt becomes one user message and the server's chat template frames it).
        score_route (`str`, *optional*, defaults to `"completions"`): scoring route: ``completions`` (``logprobs``:
            vLLM, SGLang), ``generate`` (TGI's native route with ``top_n_tokens``) or ``chat`` (``logprobs`` +
            ``top_logprobs``; the chat template frames the prompt).
        top_logprobs (`int`, *optional*, defaults to `5`): alternatives asked for when scoring.
        concurrency (`int`, *optional*, defaults to `16`): requests in flight per base URL (TGI answers 429 past
            its ``--max-concurrent-requests``, 128 by default).
        balance (`str`, *optional*, defaults to `"least-busy"`): ``least-busy`` or ``round-robin``.
        timeout (`float`, *optional*, defaults to `120`): seconds per request.
        max_retries (`int`, *optional*, defaults to `6`): retries of a request after a 429, 5xx, timeout,
            connection error or malformed answer.
        backoff (`float`, *optional*, defaults to `0.5`): first backoff in seconds; doubles per retry, with full
            jitter, capped by ``backoff_max``.
        backoff_max (`float`, *optional*, defaults to `30`): longest backoff in seconds.
        token_env (`str`, *optional*, defaults to `"HF_TOKEN"`): environment variable holding the bearer token;
            sent to every base URL when the variable is set (``null``: never). Nothing else is sent, not even a
            saved ``hf auth login``. The token is never logged or written.
        extra_body (`dict`, *optional*): server-specific fields added to every request.
        system_prompt (`str`, *optional*): with ``route: chat``, a system message sent before each prompt.
        check_model (`bool`, *optional*, defaults to `True`): before the first request, ask each server which model
            it serves (TGI ``/info``, ``/v1/models``) and stop when it is not ``model``.
    """

    type: str = "endpoint"
    base_urls: list[str] = field(default_factory=list)
    model: str | None = None
    route: str = "completions"
    score_route: str = "completions"
    top_logprobs: int = 5
    concurrency: int = 16
    balance: str = "least-busy"
    timeout: float = 120.0
    max_retries: int = 6
    backoff: float = 0.5
    backoff_max: float = 30.0
    token_env: str | None = "HF_TOKEN"
    extra_body: dict[str, Any] = field(default_factory=dict)
    system_prompt: str | None = None
    check_model: bool = True

    def check(self, where: str) -> None:
        super().check(where)
        check_choice(self.route, ("completions", "chat"), f"{where}.route")
        check_choice(self.score_route, ("completions", "chat", "generate"), f"{where}.score_route")
        check_choice(self.balance, ("least-busy", "round-robin"), f"{where}.balance")
        if self.concurrency < 1 or self.max_retries < 0 or self.timeout <= 0 or self.top_logprobs < 1:
            raise RecipeError(f"{where}: concurrency and top_logprobs must be >= 1, max_retries >= 0, timeout > 0.")
        if not self.base_urls:
            raise RecipeError(f"{where}.base_urls is empty: an endpoint engine needs at least one server URL.")
        for url in self.base_urls:
            if not url.startswith(("http://", "https://")):
                raise RecipeError(f"{where}.base_urls: {url!r} is not an http(s) URL.")
