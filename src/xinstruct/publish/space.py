"""Deploy the Gradio Space: ``space/`` (app, README with the Spaces header, requirements) plus a copy of
the ``xinstruct`` package, so the Space runs as uploaded (the package is importable from the Space root)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, get_token

from ..models import is_hub_id
from .dataset_repo import PublishError
from .push import _check_repo_id, _upload
from .templates import shipped_path

SPACE_FILES = ("app.py", "README.md", "requirements.txt")


def build_space_folder(out: str | Path) -> Path:
    """Write the Space's files into ``out``: ``app.py``, ``README.md``, ``requirements.txt`` and ``xinstruct/``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in SPACE_FILES:
        shutil.copy2(shipped_path("space", name), out / name)
    package = Path(__file__).resolve().parents[1]
    shutil.copytree(package, out / "xinstruct", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return out


def arena_variables(candidate: str | None, baseline: str | None, votes_repo: str | None,
                    votes_every: float | None = None) -> dict[str, str]:
    """The Space variables of an arena between ``candidate`` and ``baseline`` (``[NAME=]HUB_ID_OR_URL``) whose votes
    go to the dataset repo ``votes_repo``; the chat tabs talk to the candidate. A local path is refused: the Space
    cannot read this machine's files."""
    from ..arena import ArenaError, BackendSpec

    if bool(candidate) != bool(baseline):
        raise PublishError("The arena needs both --candidate and --baseline (or neither).")
    if votes_repo and not candidate:
        raise PublishError("--votes-repo is for the arena: give --candidate and --baseline too.")
    if not candidate:
        return {}
    try:
        specs = [BackendSpec.parse(candidate), BackendSpec.parse(baseline)]
    except ArenaError as error:
        raise PublishError(str(error)) from None
    for spec in specs:
        if not spec.is_endpoint and (Path(spec.source).exists() or not is_hub_id(spec.source)):
            raise PublishError(f"{spec.source} is a local path (or not a Hub id), which the Space cannot read: push "
                               "that model to the Hub (`xinstruct push RUN --models`) and give its id, or an endpoint "
                               "URL.")
    if specs[0].name == specs[1].name:
        raise PublishError(f"Both backends are named {specs[0].name!r}: write NAME=SOURCE to tell them apart.")
    variables = {"XINSTRUCT_ARENA_CANDIDATE": candidate, "XINSTRUCT_ARENA_BASELINE": baseline}
    chat = specs[0]
    variables.update({"XINSTRUCT_ENDPOINT": chat.source, "XINSTRUCT_ENDPOINT_MODEL": chat.endpoint_model}
                     if chat.is_endpoint else {"XINSTRUCT_MODEL": chat.source})
    if votes_repo:
        _check_repo_id(votes_repo)
        variables["XINSTRUCT_VOTES_REPO"] = votes_repo
    if votes_every is not None:
        variables["XINSTRUCT_VOTES_EVERY"] = str(votes_every)
    return variables


def push_space(repo_id: str, token: str | None = None, private: bool = False, variables: dict[str, str] | None = None,
               votes_repo: str | None = None) -> dict[str, Any]:
    """Create (or update) the Gradio Space ``repo_id`` with the app; unchanged files make no commit.

    Args:
        repo_id: the Space.
        token: a Hub token (default: ``HF_TOKEN`` or the saved login); never printed.
        private: create the Space private.
        variables: Space variables to set (:func:`arena_variables`); without them, set ``XINSTRUCT_MODEL`` or
            ``XINSTRUCT_ENDPOINT`` in the Space's settings.
        votes_repo: a dataset repo for the arena's votes, created private (with its card) if missing.

    The Space needs an ``HF_TOKEN`` secret with write access to ``votes_repo``; it is not set from here.
    """
    _check_repo_id(repo_id)
    token = token or get_token()
    if not token:
        raise PublishError("No Hugging Face token: set HF_TOKEN or run `hf auth login`, then push again.")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_space_folder(Path(tmp) / "space")
        result = _upload(api, folder, repo_id, "space", "main", "X-Instruction chat Space")
    if votes_repo:
        from ..evaluation.votes import votes_card

        api.create_repo(votes_repo, repo_type="dataset", private=True, exist_ok=True)
        if not api.file_exists(votes_repo, "README.md", repo_type="dataset"):
            api.upload_file(path_or_fileobj=votes_card([], votes_repo).encode("utf-8"), path_in_repo="README.md",
                            repo_id=votes_repo, repo_type="dataset", commit_message="Card of the arena votes")
    for key, value in (variables or {}).items():
        api.add_space_variable(repo_id, key, value)
    return {"repo_id": repo_id, "variables": sorted(variables or {}), **result}
