"""Publishing: the dataset repo folder that ``datasets.load_dataset`` reads as is (Parquet + card),
role-aware model cards, pushes to the Hub with one revision per refinement iteration, and the Gradio Space."""

from .cards import render_model_card
from .dataset_repo import PublishError, build_dataset_repo
from .push import push
from .space import build_space_folder, push_space

__all__ = ["PublishError", "build_dataset_repo", "build_space_folder", "push", "push_space", "render_model_card"]
