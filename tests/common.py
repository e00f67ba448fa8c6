"""Helpers of the tests."""

import torch


def repeated_mean(fn, repeats):
    """Mean and standard error of ``repeats`` independent evaluations of ``fn()``."""
    vals = torch.tensor([float(fn()) for _ in range(repeats)], dtype=torch.float64)
    return vals.mean().item(), (vals.std() / repeats**0.5).item()
