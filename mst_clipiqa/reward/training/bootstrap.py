"""Bootstrap resamples of a training part, one per ensemble member, as per-sample counts."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def bootstrap_counts(train: Sequence[int], n: int, members: int, seed: int, split_index: int) -> torch.Tensor:
    """(members, n): how often each of the data set's ``n`` samples is in each member's bootstrap resample of
    ``train`` (len(train) draws with replacement); a function of (seed, split, member) alone, so a resumed
    run draws the same resamples."""
    train = torch.as_tensor(list(train), dtype=torch.long)
    counts = torch.zeros(members, n)
    for m in range(members):
        state = np.random.SeedSequence([seed, split_index, m]).generate_state(1, dtype=np.uint64)[0]
        generator = torch.Generator().manual_seed(int(state))
        drawn = train[torch.randint(len(train), (len(train),), generator=generator)]
        counts[m] = torch.bincount(drawn, minlength=n).float()
    return counts
