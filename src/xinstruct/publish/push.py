"""Push a run to the Hub: the dataset repo with one revision (branch ``iter-k`` + a tag) per refinement
iteration and ``main`` holding the final set; optionally the models with their cards: the follower and the
evaluator of every iteration (``<repo>-follower``, ``<repo>-evaluator``: branch ``iter-k`` + tag
``iter-k-<step hash>``, ``main`` = the last iteration), the generator and the final model. Unchanged content makes
no new commit (``huggingface_hub`` skips no-op commits). After a run grew by one iteration, ``--iteration K`` commits
only on the new branches and ``main``; a full push also refreshes the earlier iterations' cards (which name K and
link the next iteration). The token comes from the argument, ``HF_TOKEN`` or the saved login, and is never
printed, logged or written.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..rundir import RunDir, iteration_name, iteration_step
from .cards import render_model_card
from .dataset_repo import PublishError, build_dataset_repo

logger = logging.getLogger(__name__)


def _check_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise PublishError(f"Invalid repo id {repo_id!r}: {e}") from None
    if "/" not in repo_id:
        raise PublishError(f"Repo id {repo_id!r} needs a namespace: USER/NAME or ORG/NAME.")


def _head(api: HfApi, repo_id: str, repo_type: str, branch: str) -> str | None:
    refs = api.list_repo_refs(repo_id, repo_type=repo_type)
    return next((b.target_commit for b in refs.branches if b.name == branch), None)


def _upload(api: HfApi, folder: Path, repo_id: str, repo_type: str, branch: str, message: str) -> dict[str, Any]:
    """Upload ``folder`` to ``branch`` (created from main if missing); report whether a commit was made."""
    if branch != "main":
        api.create_branch(repo_id, repo_type=repo_type, branch=branch, exist_ok=True)
    before = _head(api, repo_id, repo_type, branch)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, revision=branch,
                      commit_message=message, delete_patterns=["*"])
    after = _head(api, repo_id, repo_type, branch)
    return {"branch": branch, "commit": after, "new_commit": after != before}


def _model_folder(run: RunDir, role: str, k: int | None, folder: Path) -> Path:
    """A role's model as it is uploaded: the saved model, or for a likelihood evaluator the follower it reads plus its
    rating head."""
    head = run.rating_head(k) if role == "evaluator" else None
    if head is not None:  # evaluator_kind: likelihood: the iteration's follower plus the head (without local paths)
        shutil.copytree(run.model("follower", k), folder)
        data = {key: value for key, value in json.loads(head.read_text()).items() if key != "follower"}
        data["follower"] = "."  # the weights beside this file; the step hash names the follower's revision
        data["follower_step_hash"] = run.manifest(run.role_step("follower", k)).get("hash")
        (folder / head.name).write_text(json.dumps(data, indent=2))
    else:
        shutil.copytree(run.model(role, k), folder)
    return folder


def push(
    run_dir: str | Path,
    repo_id: str,
    iteration: int | None = None,
    models: bool = False,
    token: str | None = None,
    private: bool = False,
) -> dict[str, Any]:
    """Push a finished run to ``repo_id`` (a dataset repo) and, with ``models``, its models.

    Args:
        iteration: push only this iteration's revisions; the last iteration also updates ``main`` (grow a run by one
            iteration, then push just that). Default: every iteration, then ``main``.
        models: also push ``<repo_id>-follower`` and ``-evaluator`` (a revision per iteration), ``-generator`` and
            ``-model`` (the final model), each with its card.
        token: a Hub token; defaults to ``HF_TOKEN`` or the saved login.

    Returns:
        What was pushed: per revision the branch, commit and whether a new commit was made; the tags; the models.
    """
    run = RunDir(run_dir)
    _check_repo_id(repo_id)
    token = token or get_token()
    if not token:
        raise PublishError("No Hugging Face token: set HF_TOKEN or run `hf auth login`, then push again.")
    k_max = run.iterations  # (a run directory without its recipe is an error here)
    if iteration is not None and not 1 <= iteration <= k_max:
        raise PublishError(f"--iteration {iteration}: the run has iterations 1 to {k_max}.")
    todo = [iteration] if iteration is not None else list(range(1, k_max + 1))
    for k in todo:
        if not run.finished(iteration_step(k, "kept")):
            raise PublishError(f"Iteration {k} has not finished in {run.path} (no {iteration_step(k, 'kept')}); run "
                               "the recipe first.")
    with_main = k_max in todo
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    summary: dict[str, Any] = {"repo_id": repo_id, "revisions": [], "tags": [], "models": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in todo:
            step = iteration_step(k, "kept")
            folder = build_dataset_repo(run.path, Path(tmp) / iteration_name(k) / "x-instruction", source=step,
                                        iterations=False)
            result = _upload(api, folder, repo_id, "dataset", iteration_name(k),
                             f"X-Instruction: kept set of iteration {k}")
            tag = f"{iteration_name(k)}-{run.manifest(step)['hash']}"
            api.create_tag(repo_id, repo_type="dataset", tag=tag, revision=iteration_name(k), exist_ok=True)
            summary["revisions"].append(result)
            summary["tags"].append(tag)
        if with_main:
            folder = build_dataset_repo(run.path, Path(tmp) / "main" / "x-instruction")
            summary["revisions"].append(_upload(api, folder, repo_id, "dataset", "main",
                                                "X-Instruction: final diversified set"))
        if models:
            main_rev = next((r["commit"] for r in summary["revisions"] if r["branch"] == "main"), None)
            summary["models"] = _push_models(api, run, repo_id, todo, with_main, main_rev, private, Path(tmp))
    for r in summary["revisions"]:
        logger.info("%s@%s: %s", repo_id, r["branch"], "new commit" if r["new_commit"] else "unchanged, no commit")
    return summary


def _push_models(api: HfApi, run: RunDir, repo_id: str, todo: list[int], with_main: bool, main_rev: str | None,
                 private: bool, tmp: Path) -> list[dict[str, Any]]:
    """The follower and evaluator of each iteration in ``todo`` (branch + tag; ``main`` when the last is among them),
    then the generator and the final model on ``main`` (no commit when unchanged)."""
    pushed = []
    for role in ("follower", "evaluator"):
        model_repo = f"{repo_id}-{role}"
        api.create_repo(model_repo, repo_type="model", private=private, exist_ok=True)
        for k in todo:
            folder = _model_folder(run, role, k, tmp / f"{role}-{k}")
            render_model_card(run.path, role, model_repo, dataset=repo_id, dataset_revision=iteration_name(k),
                              iteration=k).save(folder / "README.md")
            branches = [iteration_name(k)] + (["main"] if with_main and k == run.iterations else [])
            for branch in branches:
                result = _upload(api, folder, model_repo, "model", branch, f"X-Instruction {role}, iteration {k}")
                pushed.append({"repo_id": model_repo, "iteration": k, **result})
            shutil.rmtree(folder)  # one model copy on disk at a time
            tag = f"{iteration_name(k)}-{run.manifest(run.role_step(role, k))['hash']}"
            api.create_tag(model_repo, repo_type="model", tag=tag, revision=iteration_name(k), exist_ok=True)
    if with_main:
        for role, suffix in (("generator", "generator"), ("final", "model")):
            model_repo = f"{repo_id}-{suffix}"
            folder = _model_folder(run, role, None, tmp / f"model-{role}")
            # the final model trained on the main revision; the generator (seed pairs) names the data set it made
            revision = main_rev if role == "final" else None
            render_model_card(run.path, role, model_repo, dataset=repo_id, dataset_revision=revision).save(
                folder / "README.md")
            api.create_repo(model_repo, repo_type="model", private=private, exist_ok=True)
            pushed.append({"repo_id": model_repo, **_upload(api, folder, model_repo, "model", "main",
                                                             f"X-Instruction {role}")})
            shutil.rmtree(folder)
    return pushed
