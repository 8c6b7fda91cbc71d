"""The validation split: one fixed held-out part of a training set, the same for every run seed and process."""

from __future__ import annotations

import torch

VAL_SPLIT_SEED = 20240601  # the validation split is the same for every run seed: one held-out set per dataset


def validation_split(n: int, fraction: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(training indices, validation indices) of a training set of ``n`` samples: a fixed random ``fraction``
    held out (None without one). Sorted, disjoint, and the same in every run and process."""
    if fraction <= 0:
        return torch.arange(n), None
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    n_val = max(1, round(fraction * n))
    return perm[n_val:].sort().values, perm[:n_val].sort().values
