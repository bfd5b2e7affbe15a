"""The likelihood evaluator (``refinement.evaluator_kind: likelihood``): a rating head over what a language model
already knows, trained on the same pseudo-ratings as the SFT evaluator.

For a pair (English instruction, native response) the iteration's follower gives three features, each per
response token: log P(response | FOLLOWER prompt with the instruction), log P(response | the same prompt with a
generic instruction), and their difference (pointwise mutual information: how much the instruction explains the
response). A multinomial logistic regression on these features, fitted on the training pseudo-ratings, gives
P(1), P(2), P(3). Level 1 (another seed's response) has a low PMI; level 2 (the follower's own answer) has a
high likelihood under the follower whatever the instruction; level 3 sits between.

Why it exists: on Gemma-3-270M and the bundled seed pairs, an SFT evaluator trained for a few CPU minutes to
write the digit stayed at chance (held-out AUC of P(3), level 3 vs 1: 0.54 and 0.48 in two settings), while the
base model's PMI alone ranked level 3 above level 1 at AUC 0.90. A large evaluator (the paper's 7B models)
learns the digit; the SFT evaluator stays the default of the GPU recipes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..inference import Engine
from ..languages import get as get_language
from ..prompts import follower_prompt

GENERIC_INSTRUCTION = "Write a text."
FEATURES = ("logp_per_token_given_instruction", "logp_per_token_given_generic_instruction", "pmi_per_token")


def likelihood_features(engine: Engine, instructions: Sequence[str], responses: Sequence[str],
                        languages: Sequence[str]) -> np.ndarray:
    """``(rows, 3)`` features of each pair from the model ``engine`` serves (see the module doc)."""
    names = [get_language(code).name for code in languages]
    given = engine.loglik([follower_prompt(i, n) for i, n in zip(instructions, names)], list(responses))
    distinct = list(dict.fromkeys(zip(names, responses)))  # a response rated with several instructions: once
    scored = dict(zip(distinct, engine.loglik([follower_prompt(GENERIC_INSTRUCTION, n) for n, _ in distinct],
                                              [r for _, r in distinct])))
    generic = [scored[key] for key in zip(names, responses)]
    rows = []
    for (with_instruction, n), (without, _) in zip(given, generic):
        n = max(n, 1)
        rows.append([with_instruction / n, without / n, (with_instruction - without) / n])
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURES))


class LikelihoodHead:
    """Multinomial logistic regression (levels 1, 2, 3) on standardised features, L2-regularised, fitted with
    L-BFGS (deterministic)."""

    def __init__(self, l2: float = 1e-2):
        self.l2 = l2
        self.mean = self.std = self.weight = self.bias = None

    def fit(self, features: np.ndarray, levels: Sequence[int]) -> LikelihoodHead:
        self.mean, self.std = features.mean(0), features.std(0) + 1e-6
        x = torch.tensor((features - self.mean) / self.std, dtype=torch.float64)
        y = torch.tensor([level - 1 for level in levels])
        weight = torch.zeros(x.shape[1], 3, dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + self.l2 * (weight**2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        self.weight, self.bias = weight.detach().numpy(), bias.detach().numpy()
        return self

    def predict_proba(self, features: np.ndarray) -> list[list[float]]:
        logits = ((features - self.mean) / self.std) @ self.weight + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return (probs / probs.sum(axis=1, keepdims=True)).tolist()

    def save(self, path: Path, **extra: Any) -> Path:
        path.write_text(json.dumps({"features": FEATURES, "mean": self.mean.tolist(), "std": self.std.tolist(),
                                    "weight": self.weight.tolist(), "bias": self.bias.tolist(), **extra}, indent=2))
        return path

    @classmethod
    def load(cls, path: Path) -> LikelihoodHead:
        data = json.loads(Path(path).read_text())
        head = cls()
        head.mean, head.std = np.asarray(data["mean"]), np.asarray(data["std"])
        head.weight, head.bias = np.asarray(data["weight"]), np.asarray(data["bias"])
        return head
