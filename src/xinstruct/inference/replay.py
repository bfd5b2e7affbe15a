"""Request-level replay: every answer of a server is stored the moment it arrives, keyed by a hash of the
request's content, so a run killed mid-step re-sends no request whose answer is stored.

Two append-only JSON Lines files live in the folder (normally ``<step>/requests``):

- ``answers.jsonl``: ``{"key", "answer"}``, one line per answered request, flushed as written;
- ``failures.jsonl``: ``{"key", "error", "attempts", "time"}``, one line per request that failed after all
  retries. A failed request has no answer, so the next run sends it again.

A line cut short by a kill is ignored (and counted) when the files are read back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import weakref
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ANSWERS = "answers.jsonl"
FAILURES = "failures.jsonl"


def request_key(payload: dict[str, Any]) -> str:
    """Stable hash of a request's content (route, model, prompt and decoding fields; not the server URL)."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ReplayStore:
    """Stored answers of one step, by request key.

    Args:
        folder (`str` or `Path`): where ``answers.jsonl`` and ``failures.jsonl`` live (created if missing).
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.answers: dict[str, Any] = {}
        self.truncated_lines = 0
        for record in self._read(ANSWERS):
            self.answers[record["key"]] = record["answer"]
        self._answers = self._append(ANSWERS)
        self._failures = self._append(FAILURES)
        # closed by close(), by a with block, or when the store is garbage-collected (the engine that owns it is gone)
        self._closer = weakref.finalize(self, _close_all, self._answers, self._failures)

    def _append(self, name: str):
        """Open for appending; a line cut short by a kill gets its newline first, so the next record stays whole."""
        path = self.folder / name
        handle = path.open("a", encoding="utf-8")
        if path.stat().st_size:
            with path.open("rb") as fh:
                fh.seek(-1, 2)
                if fh.read(1) != b"\n":
                    handle.write("\n")
        return handle

    def _read(self, name: str) -> list[dict[str, Any]]:
        path = self.folder / name
        if not path.exists():
            return []
        records = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # the last line of a killed run
                self.truncated_lines += 1
        if self.truncated_lines:
            logger.warning("%s: ignored %d incomplete line(s) left by an interrupted run", path, self.truncated_lines)
        return records

    def __contains__(self, key: str) -> bool:
        return key in self.answers

    def __len__(self) -> int:
        return len(self.answers)

    def get(self, key: str) -> Any:
        """The stored answer of ``key`` (``None`` if there is none)."""
        return self.answers.get(key)

    def put(self, key: str, answer: Any) -> None:
        """Store an answer now (one line, flushed, so a kill right after loses nothing)."""
        self.answers[key] = answer
        self._answers.write(json.dumps({"key": key, "answer": answer}, ensure_ascii=False) + "\n")
        self._answers.flush()

    def fail(self, key: str, error: str, attempts: int) -> None:
        """Record a request that failed after all retries (it stays unanswered, so it is retried next run)."""
        record = {"key": key, "error": error, "attempts": attempts, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self._failures.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._failures.flush()

    def failures(self) -> list[dict[str, Any]]:
        """Every failure recorded so far (also those answered by a later run)."""
        return self._read(FAILURES)

    @property
    def failures_path(self) -> Path:
        return self.folder / FAILURES

    def close(self) -> None:
        """Close the two files (every record is already flushed)."""
        self._closer()

    def __enter__(self) -> ReplayStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_all(*handles) -> None:
    for handle in handles:
        handle.close()
