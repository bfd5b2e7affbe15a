"""The run directory: one folder per step, each with its data and a ``manifest.json``; :class:`RunDir` is the only
code that knows the layout (publishing, push, cards, evaluation and the Space read a run through it).

A step's identity is a hash of the settings that change its output plus the hashes of the steps it
reads. A step whose manifest carries the same hash is skipped. Long steps write shards as they go
(``shards/00000``, ...): each shard is written to a temporary folder and renamed into place, so a killed
run resumes at the first missing shard and no row is lost or repeated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from datasets import Dataset, concatenate_datasets, load_from_disk
from tqdm.auto import tqdm

from .hardware import cpu_kind

logger = logging.getLogger(__name__)


def _cuda() -> bool:
    import torch  # only when a manifest is written: reading a run directory (plan, report) does not load torch

    return torch.cuda.is_available()

MANIFEST = "manifest.json"
PROGRESS = "progress.json"
RECIPE = "recipe.yaml"
MODEL = "model"  # a training step's model folder
REQUESTS = "requests"  # a step's stored endpoint answers (replayed when a killed step resumes)
RATING_HEAD = "rating_head.json"  # a likelihood evaluator's head (refinement.evaluator_kind: likelihood)

# The steps' folders: the stages declare their steps under these names, and whoever reads a run names a step with them.
SEED, WEBTEXT, BASELINE, GENERATOR, CANDIDATES = "seed", "webtext", "baseline", "generator", "candidates"
SWAPS, DIVERSIFIED, FINAL = "swaps", "diversified", "final"
ITERATION_STEPS = ("follower", "pseudo_ratings", "evaluator", "ratings", "kept")  # iter-k/<name>, in run order
FOLLOWER, PSEUDO_RATINGS, EVALUATOR, RATINGS, KEPT = ITERATION_STEPS
ROLES = (GENERATOR, FOLLOWER, EVALUATOR, FINAL)  # the trained roles; each is trained by the step of its name
_VERSIONED = ("x-instruction", "torch", "transformers", "trl", "datasets", "peft", "huggingface_hub")


def settings_hash(settings: dict[str, Any], upstream: Iterable[str] = ()) -> str:
    """Stable hash of a step's output-changing settings and its inputs' hashes."""
    blob = json.dumps({"settings": settings, "upstream": sorted(upstream)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape a step's output (recorded in every manifest)."""
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _save_to_disk(rows: Dataset, path: Path) -> None:
    """``save_to_disk``; an empty dataset is written as one empty shard (datasets 5.2 writes none for it, and then
    cannot load the folder back)."""
    rows.save_to_disk(str(path), num_shards=1 if len(rows) == 0 else None)


class Step:
    """One step folder of a run, e.g. ``runs/tiny/candidates``.

    Args:
        run_dir (`Path`): the run directory.
        name (`str`): folder name of the step.
        settings (`dict`): output-changing settings (not batch size, device, concurrency).
        upstream (`list[Step]`, *optional*): steps whose outputs this one reads.
    """

    def __init__(self, run_dir: Path, name: str, settings: dict[str, Any], upstream: Iterable[Step] = ()):
        self.name = name
        self.path = Path(run_dir) / name
        self.settings = settings
        self.hash = settings_hash(settings, [u.hash for u in upstream])
        self._started = time.time()

    # -- state ---------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> dict[str, Any] | None:
        """The finished step's manifest, or ``None``."""
        if not self.manifest_path.exists():
            return None
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    def is_done(self) -> bool:
        """True when the step finished with the same settings hash (so it is skipped)."""
        manifest = self.manifest()
        return manifest is not None and manifest.get("hash") == self.hash

    def begin(self) -> None:
        """Prepare the folder; keep shards written under the same hash, clear anything else."""
        self._started = time.time()
        progress = self.path / PROGRESS
        if self.path.exists():
            same = progress.exists() and json.loads(progress.read_text()).get("hash") == self.hash
            if not same:
                logger.info("%s: settings changed or step incomplete; starting it afresh", self.name)
                shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        progress.write_text(json.dumps({"hash": self.hash, "settings": self.settings}, default=str))

    # -- shards --------------------------------------------------------------------------------
    def shard_path(self, index: int) -> Path:
        return self.path / "shards" / f"{index:05d}"

    def has_shard(self, index: int) -> bool:
        return (self.shard_path(index) / "dataset_info.json").exists()

    def write_shard(self, index: int, rows: Dataset) -> None:
        """Write one shard atomically (temporary folder, then rename)."""
        final = self.shard_path(index)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _save_to_disk(rows, tmp)
        tmp.rename(final)

    def map_shards(self, rows: Dataset, shard_size: int, fn: Callable[[Dataset, int], Dataset], desc: str) -> Dataset:
        """Apply ``fn(rows_of_shard, shard_index)`` shard by shard, writing each result as it is done.

        Shards already written (same settings hash, see :meth:`begin`) are not recomputed, so a killed
        step resumes at its first missing shard. Returns the concatenated results in order.
        """
        n_shards = (len(rows) + shard_size - 1) // shard_size
        done = sum(self.has_shard(i) for i in range(n_shards))
        if 0 < done < n_shards:
            logger.info("%s: resuming, %d of %d shards already written", self.name, done, n_shards)
        with tqdm(total=len(rows), desc=desc, unit="row") as bar:
            for i in range(n_shards):
                end = min((i + 1) * shard_size, len(rows))
                if not self.has_shard(i):
                    self.write_shard(i, fn(rows.select(range(i * shard_size, end)), i))
                bar.update(end - i * shard_size)
        return self.read_shards(n_shards)

    def read_shards(self, count: int) -> Dataset:
        """Concatenate shards ``0 .. count-1`` in order."""
        parts = [load_from_disk(str(self.shard_path(i))) for i in range(count)]
        return concatenate_datasets(parts) if parts else Dataset.from_dict({})

    # -- data and manifest ---------------------------------------------------------------------
    @property
    def model_path(self) -> Path:
        """Where a training step saves its model."""
        return self.path / MODEL

    @property
    def requests_path(self) -> Path:
        """Where the step's endpoint answers are stored, so a killed step re-sends nothing."""
        return self.path / REQUESTS

    def data_path(self, name: str = "data") -> Path:
        return self.path / name

    def save(self, rows: Dataset, name: str = "data") -> Path:
        """Save a dataset of the step (Arrow, ``datasets.load_from_disk`` reads it)."""
        target = self.data_path(name)
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _save_to_disk(rows, tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        return target

    def load(self, name: str = "data") -> Dataset:
        """Load a saved dataset of this step."""
        return load_from_disk(str(self.data_path(name)))

    def finish(self, report: dict[str, Any]) -> dict[str, Any]:
        """Write the manifest (last, so its presence means the step is complete) and return it."""
        manifest = {
            "step": self.name,
            "hash": self.hash,
            "settings": self.settings,
            "seconds": round(time.time() - self._started, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": package_versions(),
            "machine": {"cpu": cpu_kind(), "cuda": _cuda()},
            **report,
        }
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        tmp.rename(self.manifest_path)
        shutil.rmtree(self.path / "shards", ignore_errors=True)
        (self.path / PROGRESS).unlink(missing_ok=True)
        return manifest


def fold_dir(step_path: Path, fold: int, folds: int) -> Path:
    """Where fold ``fold`` of a cross-fitted step keeps its model and rating head: the step folder itself when there
    is one fold, else ``<step>/fold-<fold>``."""
    return Path(step_path) if folds == 1 else Path(step_path) / f"fold-{fold}"


def iteration_name(k: int) -> str:
    """The folder of refinement iteration ``k`` (``iter-k``); publishing names the iteration's branch and dataset
    config after it."""
    return f"iter-{k}"


def iteration_step(k: int, name: str) -> str:
    """The folder of step ``name`` (one of :data:`ITERATION_STEPS`) of refinement iteration ``k``."""
    if name not in ITERATION_STEPS:
        raise ValueError(f"{name!r} is not a step of a refinement iteration; use one of {', '.join(ITERATION_STEPS)}.")
    return f"{iteration_name(k)}/{name}"


class RunDir:
    """A run directory as a reader sees it: the recipe, each step's manifest and data, the kept set of an
    iteration, the model of a role.

    Args:
        path (`str` or `Path`): the run directory (``runs/<name>``).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._recipe: dict[str, Any] | None = None  # read once per RunDir (push and cards ask for it often)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- the recipe ----------------------------------------------------------------------------
    def write_recipe(self, recipe: dict[str, Any]) -> None:
        """Record the recipe a run uses (plain data, as ``Recipe.to_dict`` gives it)."""
        import yaml

        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / RECIPE).write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
        self._recipe = None

    def is_run(self) -> bool:
        return (self.path / RECIPE).exists()

    def recipe(self) -> dict[str, Any]:
        """The recipe the run used, as plain data."""
        import yaml

        from .errors import RunDirError

        if self._recipe is None:
            if not self.is_run():
                raise RunDirError(f"{self.path} is not a run directory (no {RECIPE}); run a recipe into it first.")
            self._recipe = yaml.safe_load((self.path / RECIPE).read_text(encoding="utf-8")) or {}
        return self._recipe

    @property
    def iterations(self) -> int:
        """K, the number of refinement iterations of the recipe."""
        return int((self.recipe().get("refinement") or {}).get("iterations", 0))

    # -- steps ---------------------------------------------------------------------------------
    def step_path(self, step: str) -> Path:
        return self.path / step

    def manifest(self, step: str) -> dict[str, Any]:
        """A finished step's manifest; empty when the step has not finished."""
        path = self.path / step / MANIFEST
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def finished(self, step: str) -> bool:
        return (self.path / step / MANIFEST).exists()

    def load(self, step: str, name: str = "data") -> Dataset:
        """A dataset of a finished step (``data``, ``dropped``, ...)."""
        from .errors import RunDirError

        if not self.finished(step):
            raise RunDirError(f"{self.path} has no finished {step} step (no {self.path / step / MANIFEST}). Run the "
                            f"recipe first: xinstruct run RECIPE --run-dir {self.path}")
        return load_from_disk(str(self.path / step / name))

    def kept(self, k: int) -> Dataset:
        """The rows iteration ``k`` kept."""
        return self.load(iteration_step(k, KEPT))

    # -- models --------------------------------------------------------------------------------
    def role_step(self, role: str, iteration: int | None = None) -> str:
        """The step that trains ``role``; the follower and the evaluator of iteration ``iteration`` (default: K)."""
        from .errors import RunDirError

        if role not in ROLES:
            raise RunDirError(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.")
        if role in (FOLLOWER, EVALUATOR):
            return iteration_step(iteration or self.iterations, role)
        return role

    def model(self, role: str, iteration: int | None = None) -> Path:
        """The model folder of a role (``final/model``, ``iter-k/evaluator/model``, ...). A likelihood evaluator has no
        model of its own: it reads its iteration's follower (see :meth:`rating_head`). A cross-fitted follower gives
        its fold-0 model (trained on half the pool; fold 1 is the other half)."""
        step = self.path / self.role_step(role, iteration)
        return step / MODEL if (step / MODEL).exists() or not (fold_dir(step, 0, 2) / MODEL).exists() \
            else fold_dir(step, 0, 2) / MODEL

    def rating_head(self, iteration: int | None = None) -> Path | None:
        """The likelihood evaluator's rating head of an iteration, when the run uses one."""
        step = self.path / self.role_step(EVALUATOR, iteration)
        for head in (step / RATING_HEAD, fold_dir(step, 0, 2) / RATING_HEAD):
            if head.exists():
                return head
        return None

    def eval_results(self) -> Path:
        """Where ``xinstruct evaluate --run`` writes its results."""
        return self.path / "eval" / "results.json"
