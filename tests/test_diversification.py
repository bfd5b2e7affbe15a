"""Diversification: equal share per cluster, deterministic top-up, cached embeddings, faiss k-means."""

from collections import Counter

import numpy as np
from datasets import Dataset

from xinstruct.config_loader import load_recipe
from xinstruct.rundir import Step
from xinstruct.stages.diversification import EmbeddingCache, equal_sample, kmeans_labels


def test_every_cluster_contributes_equally_where_it_can():
    labels = np.array([0] * 10 + [1] * 10 + [2] * 2 + [3] * 6)
    picked = equal_sample(labels, target=16, seed=0)
    counts = Counter(int(labels[i]) for i in picked)
    assert len(picked) == len(set(picked)) == 16
    assert counts[2] == 2  # a short cluster gives all it has
    assert sorted(counts[c] for c in (0, 1, 3)) == [4, 5, 5]  # the other 14 split as evenly as possible
    assert equal_sample(labels, 16, seed=0) == picked  # deterministic
    assert equal_sample(labels, 16, seed=1) != picked


def test_target_larger_than_pool_takes_everything():
    labels = np.array([0, 0, 1])
    assert sorted(equal_sample(labels, 10, 0)) == [0, 1, 2]


def test_faiss_kmeans_finds_separated_groups():
    rng = np.random.default_rng(0)
    centers = np.eye(8, dtype=np.float32)[:3] * 10
    points = np.concatenate([c + rng.normal(0, 0.1, (20, 8)).astype(np.float32) for c in centers])
    labels, _ = kmeans_labels(points, 3, seed=0)
    groups = [set(labels[i * 20 : (i + 1) * 20]) for i in range(3)]
    assert all(len(g) == 1 for g in groups) and len(set.union(*groups)) == 3


def test_diversify_with_the_offline_embedder_and_cache(tmp_path):
    from xinstruct.stages.diversification import diversify

    texts = ([f"Write a recipe for dish number {i}." for i in range(12)]
             + [f"Explain the history of city {i}." for i in range(12)])
    kept = Dataset.from_dict({"id": [str(i) for i in range(24)], "language": ["sw"] * 24, "instruction": texts,
                              "output": ["x"] * 24})
    recipe = load_recipe(None, ["languages=[sw]", "diversification.clusters=2",
                                "diversification.target_per_language=10"])
    step = Step(tmp_path / "run", "diversified", {})
    step.begin()
    report = diversify(recipe, kept, step)
    out = step.load()
    assert len(out) == 10 and set(Counter(out["cluster"]).values()) == {5}
    assert report["per_language"]["sw"]["cluster_sizes"] and report["embeddings_computed"] == 24
    again = Step(tmp_path / "run2", "diversified", {})
    again.begin()
    assert diversify(recipe, kept, again)["embeddings_computed"] == 0  # cached by content hash
    big = load_recipe(None, ["languages=[sw]", "diversification.clusters=2",
                             "diversification.target_per_language=100"])
    third = Step(tmp_path / "run3", "diversified", {})
    third.begin()
    report = diversify(big, kept, third)
    assert len(third.load()) == 24 and "fewer than diversification.target_per_language=100" in report["warnings"][0]


def test_embedding_cache_returns_unit_vectors(tmp_path):
    cache = EmbeddingCache("all-MiniLM-L6-v2", folder=tmp_path)
    vecs, computed = cache.embed(["hello world", "habari dunia", "hello world"])
    assert vecs.shape == (3, 384) and computed == 2
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert np.array_equal(vecs[0], vecs[2])


def test_a_language_that_ends_with_no_rows_is_an_error_naming_it(tmp_path):
    import pytest

    from xinstruct.errors import StageError
    from xinstruct.stages.diversification import diversify

    kept = Dataset.from_dict({"id": ["1"], "language": ["sw"], "instruction": ["Write a recipe."], "output": ["x"]})
    step = Step(tmp_path / "run", "diversified", {})
    step.begin()
    with pytest.raises(StageError, match="No kept rows for ta after refinement"):
        diversify(load_recipe(None, ["languages=[sw,ta]"]), kept, step)
