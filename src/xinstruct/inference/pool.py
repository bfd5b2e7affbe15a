"""The local engine on several devices: one worker process per device, whole batches handed out, results merged
in input order.

The parent tokenises the prompts once and cuts them into the same length-sorted batches a single
:class:`~xinstruct.inference.local.LocalEngine` would make (:func:`~xinstruct.inference.local.length_batches`).
Each batch goes, as a job, to whichever worker is free; a worker runs it through its own ``LocalEngine`` with the
batch's own seed (:func:`~xinstruct.inference.local.batch_seed`). A batch's rows are therefore the same whichever
worker runs it, and the same as with one device. Steps keep writing their shards in the parent, so shards and
resume keep their guarantees: a killed run leaves no half-written shard, and its workers exit with it.

:func:`build_local_engine` makes the engine of a ``local`` engine block: one ``LocalEngine``, or a pool of them.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import signal
import time
import traceback
import weakref
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from ..errors import RecipeError, StageError
from ..models import resolve_model
from .base import Engine, GenerationParams
from .local import LocalEngine, length_batches
from .local_config import LocalConfig

logger = logging.getLogger(__name__)


def pool_devices(devices: int | str, device: str | None = None) -> list[str]:
    """The device of each worker for ``engine.devices``. On CUDA, ``N`` means ``cuda:0`` .. ``cuda:N-1`` and ``all``
    every visible GPU. On CPU, ``N`` starts ``N`` processes that share the cores (for tests and for machines whose
    cores one process does not fill) and ``all`` means one process."""
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind.startswith("cuda"):
        visible = torch.cuda.device_count()
        if visible == 0:
            raise RecipeError(f"engine.device is {kind!r} but this machine shows no CUDA device.")
        n = visible if devices == "all" else devices
        if n > 1 and kind != "cuda":
            raise RecipeError(f"engine.device {kind!r} names one GPU; with engine.devices {devices!r} leave "
                              "engine.device unset (or 'cuda'): the workers use cuda:0 .. cuda:N-1 "
                              "(CUDA_VISIBLE_DEVICES picks them).")
        if n > visible:
            raise RecipeError(f"engine.devices is {n} but this machine shows {visible} CUDA device(s).")
        return [f"cuda:{i}" for i in range(n)] if n > 1 or kind == "cuda" else [kind]
    return [kind] * (1 if devices == "all" else devices)


def _worker(model: str, device: str, threads: int | None, settings: dict[str, Any], jobs, results) -> None:
    """A worker process: load the model on ``device``, then run jobs ``(key, method, args)`` until told to stop
    (``None``) or until the parent process is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which stops the workers
    if threads:
        torch.set_num_threads(threads)
    try:
        engine = LocalEngine(model, device=device, progress=False, **settings)
    except Exception as error:  # reported to the parent, which raises it
        results.put(("failed", None, f"{type(error).__name__}: {error}", traceback.format_exc()))
        return
    results.put(("ready", None, None, None))
    parent = mp.parent_process()
    while True:
        try:
            job = jobs.get(timeout=1.0)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return
            continue
        if job is None:
            return
        key, method, args = job
        before = dict(engine.stats)
        try:
            value = getattr(engine, method)(*args)
        except Exception as error:
            results.put(("failed", key, f"{type(error).__name__}: {error}", traceback.format_exc()))
            continue
        stats = {k: engine.stats[k] - before.get(k, 0) for k in ("prompts", "new_tokens")}
        results.put(("done", key, value, stats))


def _stop(workers: list, jobs, results) -> None:
    """Stop the workers: ask them to exit, give them a shared deadline, then terminate what is left (also run when the
    pool is garbage-collected or the interpreter exits). Jobs still queued are dropped."""
    while True:
        try:
            jobs.get_nowait()
        except (queue.Empty, OSError, ValueError):
            break
    for _ in workers:
        try:
            jobs.put(None)
        except (OSError, ValueError):
            break
    results.cancel_join_thread()  # results nobody reads must not keep a worker from exiting
    deadline = time.monotonic() + 10
    for worker in workers:
        worker.join(timeout=max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            worker.terminate()


class DevicePool(Engine):
    """A :class:`~xinstruct.inference.local.LocalEngine` on each of several devices (``engine.devices``).

    Args:
        model (`str`): model name for :func:`xinstruct.models.resolve_model`.
        devices (`list[str]`): one worker process per entry (see :func:`pool_devices`).
        batch_size (`int`, defaults to `16`): prompts per forward pass in every worker.
        dtype (`str`, defaults to `"auto"`): weights dtype, resolved per worker device.
        max_input_tokens (`int`, defaults to `1024`): the longest prompt accepted (checked before any job is sent).
        progress (`bool`, defaults to `True`): show a progress bar.
    """

    name = "local"

    def __init__(self, model: str, devices: list[str], batch_size: int = 16, dtype: str = "auto",
                 max_input_tokens: int = 1024, progress: bool = True):
        self.model_name, self.devices = model, list(devices)
        self.batch_size, self.max_input_tokens, self.progress = batch_size, max_input_tokens, progress
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
        self.stats = {"prompts": 0, "new_tokens": 0, "seconds": 0.0, "devices": len(self.devices)}
        context = mp.get_context("spawn")  # CUDA cannot be used in a forked child
        self._jobs, self._results = context.Queue(), context.Queue()
        cpu_workers = sum(d == "cpu" for d in self.devices)
        threads = max(1, (os.cpu_count() or 1) // cpu_workers) if cpu_workers else None
        settings = {"batch_size": batch_size, "dtype": dtype, "max_input_tokens": max_input_tokens}
        self._workers = [
            context.Process(target=_worker, args=(model, device, threads if device == "cpu" else None, settings,
                                                  self._jobs, self._results), daemon=True)
            for device in self.devices
        ]
        for worker in self._workers:
            worker.start()
        self._finalizer = weakref.finalize(self, _stop, self._workers, self._jobs, self._results)
        for _ in self._workers:
            self._receive()  # every worker has loaded its model (or its error is raised here)

    def close(self) -> None:
        """Stop the worker processes and free their devices."""
        self._finalizer()

    # ------------------------------------------------------------------------------------------
    def _receive(self) -> tuple[str, Any, Any, Any]:
        while True:
            try:
                message = self._results.get(timeout=1.0)
            except queue.Empty:
                dead = [d for d, w in zip(self.devices, self._workers) if not w.is_alive()]
                if dead:
                    self.close()
                    raise StageError(
                        f"An engine worker process ({', '.join(dead)}) died; see its output above.") from None
                continue
            status, key, value, extra = message
            if status == "failed":
                logger.error("engine worker traceback:\n%s", extra)
                self.close()
                raise StageError(f"An engine worker failed: {value}")
            return message

    def _run(self, method: str, jobs: list[tuple[list[int], tuple]], n_rows: int, desc: str) -> list[Any]:
        """Send ``(rows, args)`` jobs, collect every result and put it back at its rows' places."""
        out: list[Any] = [None] * n_rows
        started = time.perf_counter()
        for key, (_, args) in enumerate(jobs):
            self._jobs.put((key, method, args))
        with tqdm(total=n_rows, desc=desc, unit="row", disable=not self.progress, leave=False) as bar:
            for _ in jobs:
                _, key, values, stats = self._receive()
                rows = jobs[key][0]
                for i, value in zip(rows, values):
                    out[i] = value
                for name, count in stats.items():
                    self.stats[name] += count
                bar.update(len(rows))
        self.stats["seconds"] += time.perf_counter() - started
        return out

    def _lengths(self, texts: list[str], special: bool = True) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=special)["input_ids"]]

    def generate(self, prompts: list[str], params: GenerationParams) -> list[str]:
        """See :meth:`Engine.generate`; batch ``b`` is sampled with the seed a single engine gives batch ``b``."""
        if not prompts:
            return []
        batches = length_batches(self._lengths(prompts), self.batch_size, self.max_input_tokens)
        jobs = [(idx, ([prompts[i] for i in idx], params, b)) for b, idx in enumerate(batches)]
        return self._run("generate", jobs, len(prompts), "generate")

    def score(self, prompts: list[str], options: list[str]) -> list[list[float]]:
        """See :meth:`Engine.score`."""
        if not prompts:
            return []
        batches = length_batches(self._lengths(prompts), self.batch_size, self.max_input_tokens)
        return self._run("score", [(idx, ([prompts[i] for i in idx], options)) for idx in batches], len(prompts),
                         "score")

    def loglik(self, prompts: list[str], continuations: list[str]) -> list[tuple[float, int]]:
        """See :meth:`Engine.loglik`."""
        if not prompts:
            return []
        lengths = [a + b for a, b in zip(self._lengths(prompts), self._lengths(continuations, special=False))]
        batches = length_batches(lengths, self.batch_size, self.max_input_tokens)
        jobs = [(idx, ([prompts[i] for i in idx], [continuations[i] for i in idx])) for idx in batches]
        return self._run("loglik", jobs, len(prompts), "loglik")


def build_local_engine(config: LocalConfig, model: str, requests_dir: str | Path | None = None,
                       progress: bool = True) -> Engine:
    """The local engine ``config`` describes (the builder :data:`~xinstruct.inference.ENGINES` registers for
    ``local``): a :class:`~xinstruct.inference.local.LocalEngine`, or a :class:`DevicePool` of them for ``devices``
    > 1. ``requests_dir`` is not used (nothing to replay)."""
    devices = pool_devices(config.devices, config.device)
    if len(devices) > 1:
        return DevicePool(model, devices, batch_size=config.batch_size, dtype=config.dtype,
                          max_input_tokens=config.max_input_tokens, progress=progress)
    return LocalEngine(model, batch_size=config.batch_size, dtype=config.dtype, device=config.device,
                       max_input_tokens=config.max_input_tokens, progress=progress)
