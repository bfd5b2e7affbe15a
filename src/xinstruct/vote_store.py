"""Arena votes on disk and on the Hub: each vote is appended to a local JSON Lines file (flushed and synced before
the voter sees the result), and a :class:`huggingface_hub.CommitScheduler` pushes the folder to a dataset repo
(``votes/*.jsonl``) every few minutes, the Hub's way of saving a Space's data.

Nothing is lost across restarts: each process writes its own file (``votes-<time>-<id>.jsonl``, so two processes
never write one file and a restarted Space never overwrites a pushed file with a shorter one), and a new scheduler
pushes every file of the folder it has not pushed itself, so a vote written just before a crash goes with the first
commit after the restart. A push that fails leaves the files as they are for the next one. After each commit the
repo's card is regenerated from the votes on the Hub (:func:`xinstruct.evaluation.votes.votes_card`).

The token is whatever huggingface_hub finds (the Space's ``HF_TOKEN`` secret); it is never printed or logged.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from huggingface_hub import CommitScheduler

logger = logging.getLogger(__name__)

VOTES_IN_REPO = "votes"  # folder of the vote files in the dataset repo


class VoteScheduler(CommitScheduler):
    """A :class:`CommitScheduler` of the votes folder that also refreshes the repo's card after each commit."""

    def push_to_hub(self):
        info = super().push_to_hub()
        if info is not None:
            try:
                refresh_card(self.api, self.repo_id, info.oid)
            except Exception as error:  # noqa: BLE001 - the votes are pushed; the card waits for the next commit
                logger.warning("votes pushed to %s, but its card was not updated: %s", self.repo_id, error)
        return info


def refresh_card(api, repo_id: str, revision: str) -> bool:
    """Rewrite ``README.md`` of the votes repo from the votes at ``revision``; ``False`` when it was up to date."""
    from .evaluation.votes import load_votes, votes_card

    card = votes_card(load_votes(repo_id, revision=revision), repo_id)
    try:
        current = Path(api.hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=revision)).read_text(
            encoding="utf-8")
    except Exception:  # noqa: BLE001 - no card yet
        current = None
    if current == card:
        return False
    api.upload_file(path_or_fileobj=card.encode("utf-8"), path_in_repo="README.md", repo_id=repo_id,
                    repo_type="dataset", commit_message="Update the win-rate table")
    return True


class VoteStore:
    """Append vote rows to ``folder`` and, with ``repo_id``, push them to that dataset repo every ``every`` minutes.

    Args:
        folder: local folder of the vote files (a Space's persistent storage, ``/data/votes``, keeps it across
            restarts).
        repo_id: dataset repo of the votes (created if missing); ``None`` saves locally only.
        every: minutes between pushes.
        private: whether a votes repo created here is private.
    """

    def __init__(self, folder: str | Path, repo_id: str | None = None, every: float = 5.0, private: bool = True):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.path = self.folder / f"votes-{stamp}-{uuid.uuid4().hex[:8]}.jsonl"
        self.repo_id, self.every, self.private = repo_id, every, private
        self.scheduler: VoteScheduler | None = None
        self.problem: str | None = None  # why votes are not being pushed, if they are not
        self._lock = threading.Lock()
        self._retry: threading.Timer | None = None
        if repo_id:
            self._start()

    def _start(self) -> None:
        """Start the scheduler; if the Hub cannot be reached, say why and try again in ``every`` minutes."""
        # what the card refresh needs, imported here first: imported in the scheduler's thread while another thread
        # imports the same modules (matplotlib, pulled in by xinstruct.publish), Python can hand out a half-made one
        import datasets  # noqa: F401

        from .evaluation import votes  # noqa: F401
        from .publish import templates  # noqa: F401

        try:
            self.scheduler = VoteScheduler(repo_id=self.repo_id, repo_type="dataset", folder_path=self.folder,
                                           path_in_repo=VOTES_IN_REPO, allow_patterns=["*.jsonl"], every=self.every,
                                           private=self.private)
            self.problem = None
        except Exception as error:  # noqa: BLE001 - the arena keeps saving votes locally
            self.problem = f"votes are saved in {self.folder} but not pushed to {self.repo_id}: {error}"
            logger.warning("%s (trying again in %s minutes)", self.problem, self.every)
            self._retry = threading.Timer(self.every * 60, self._start)
            self._retry.daemon = True
            self._retry.start()

    @property
    def lock(self):
        """The scheduler's lock (a push never reads a half-written line), else a local one."""
        return self.scheduler.lock if self.scheduler is not None else self._lock

    def append(self, row: dict[str, Any]) -> None:
        """Write one vote as a JSON line, flushed and synced to disk before returning."""
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self.lock:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())

    def push_now(self):
        """Push what is not yet on the Hub and wait for it (``None`` without a repo); for tests and shutdown."""
        return self.scheduler.trigger().result() if self.scheduler is not None else None

    def stop(self) -> None:
        """Stop scheduling pushes (what is on disk stays there)."""
        if self._retry is not None:
            self._retry.cancel()
        if self.scheduler is not None:
            self.scheduler.stop()


def store_from_env() -> VoteStore:
    """The vote store the environment asks for: ``XINSTRUCT_VOTES_DIR`` (default ``/data/votes`` on a Space with
    persistent storage, else ``votes``), ``XINSTRUCT_VOTES_REPO`` (a dataset repo id; unset: local only) and
    ``XINSTRUCT_VOTES_EVERY`` (minutes between pushes, 5)."""
    env = os.environ.get
    default = "/data/votes" if os.path.isdir("/data") and os.access("/data", os.W_OK) else "votes"
    return VoteStore(env("XINSTRUCT_VOTES_DIR") or default, env("XINSTRUCT_VOTES_REPO") or None,
                     every=float(env("XINSTRUCT_VOTES_EVERY", "5")))
