"""Deploy the Gradio Space: ``space/`` (app, README with the Spaces header, requirements) plus a copy of
the ``xinstruct`` package, so the Space runs as uploaded (the package is importable from the Space root)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, get_token

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


def push_space(repo_id: str, token: str | None = None, private: bool = False) -> dict[str, Any]:
    """Create (or update) the Gradio Space ``repo_id`` with the app; unchanged files make no commit.

    Set the Space's variables (``XINSTRUCT_MODEL`` or ``XINSTRUCT_ENDPOINT``) and the ``HF_TOKEN`` secret in
    its settings; they are not uploaded from here.
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
    return {"repo_id": repo_id, **result}
