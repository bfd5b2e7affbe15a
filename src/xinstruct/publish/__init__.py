"""Publishing: the dataset repo folder that ``datasets.load_dataset`` reads as is (Parquet + card),
role-aware model cards, and pushes to the Hub with one revision per refinement iteration."""

from .cards import render_model_card
from .dataset_repo import PublishError, build_dataset_repo
from .push import push

__all__ = ["PublishError", "build_dataset_repo", "push", "render_model_card"]
