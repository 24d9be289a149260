"""Importance-weighted choice of the scale and shift of asymmetric group-wise round-to-nearest (`optimizer="imatrix"`).

Round-to-nearest between each group's minimum and maximum spends its few levels on the extremes and weighs every
weight's error alike. What matters is the error of the layer's *output*: for one output `y = Σ_j w_j x_j`, the mean
squared error over calibration inputs is, up to cross terms, `Σ_j E[x_j²] (w_j − ŵ_j)²`. llama.cpp's importance
matrix (imatrix) weighs the rounding error of its k-quants by exactly these `E[x_j²]`; AWQ's clipping search minimises
the output error over a grid of shrunken ranges. [`weighted_affine`] does both for optimum-quanto's affine grid: for
every group it tries ranges shrunk towards zero, keeps the one with the smallest importance-weighted error, then
refits scale and shift by weighted least squares on the chosen codes (kept only where it lowers the error).
Without calibration data the importance is uniform: the same search on the plain squared error. How much it gains
over the range and over HQQ, measured on the demo models: `docs/frontier.md`.
"""

from __future__ import annotations

import torch


SEARCH_STEPS = 20  # ranges from 100% down to SMALLEST_RANGE of the group's own, in equal steps
SMALLEST_RANGE = 0.5
REFITS = 2


def _rounded(
    grouped: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, top: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(codes, dequantized)` of `grouped` on optimum-quanto's affine grid: `codes = clamp(round((w + shift) /
    scale), 0, top)`, `dequantized = codes · scale − shift`."""
    codes = torch.clamp(torch.round((grouped + shift) / scale), 0, top)
    return codes, codes * scale - shift


def as_stored(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`values` rounded to the dtype they are stored in, and back to their own dtype."""
    return values.to(dtype).to(values.dtype)


def weighted_affine(
    grouped: torch.Tensor, importance: torch.Tensor, bits: int, stored_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and shift of each group (row of `grouped`) minimising the importance-weighted squared rounding error.

    Args:
        grouped (`torch.Tensor`):
            Float weights, one group per row: `(groups, group_size)`.
        importance (`torch.Tensor`):
            Non-negative weight of each element's squared error, same shape (e.g. the mean squared calibration
            input of the element's input channel); rows of zeros fall back to the unweighted error.
        bits (`int`):
            Bits of the codes (2 or 4).
        stored_dtype (`torch.dtype`):
            Dtype the scales and shifts are stored in: candidates are rounded to it before they are scored, so the
            error minimised is the error of the saved checkpoint.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: `(scale, shift)`, each `(groups, 1)` in the dtype of `grouped` and
        exactly representable in `stored_dtype`.
    """
    top = 2**bits - 1
    smallest = torch.finfo(stored_dtype).tiny
    weights = importance.to(grouped.dtype)
    weights = weights + 1e-6 * weights.mean(dim=1, keepdim=True).clamp_min(1e-30)  # all-zero rows: unweighted
    low, high = grouped.amin(dim=1, keepdim=True), grouped.amax(dim=1, keepdim=True)

    def error(scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return (weights * (grouped - _rounded(grouped, scale, shift, top)[1]) ** 2).sum(dim=1, keepdim=True)

    best_scale = best_shift = best_error = None
    for step in range(SEARCH_STEPS + 1):
        fraction = 1.0 - (1.0 - SMALLEST_RANGE) * step / SEARCH_STEPS
        scale = as_stored((high - low) * fraction / top, stored_dtype).clamp_min(smallest)
        shift = as_stored(-low * fraction, stored_dtype)
        candidate = error(scale, shift)
        if best_error is None:
            best_scale, best_shift, best_error = scale, shift, candidate
            continue
        better = candidate < best_error
        best_scale, best_shift = torch.where(better, scale, best_scale), torch.where(better, shift, best_shift)
        best_error = torch.where(better, candidate, best_error)
    for _ in range(REFITS):
        codes, _ = _rounded(grouped, best_scale, best_shift, top)
        total = weights.sum(dim=1, keepdim=True)
        mean_code = (weights * codes).sum(dim=1, keepdim=True) / total
        mean_weight = (weights * grouped).sum(dim=1, keepdim=True) / total
        variance = (weights * (codes - mean_code) ** 2).sum(dim=1, keepdim=True)
        covariance = (weights * (codes - mean_code) * (grouped - mean_weight)).sum(dim=1, keepdim=True)
        slope = torch.where(variance > 0, covariance / variance.clamp_min(1e-30), best_scale)
        scale = as_stored(slope, stored_dtype).clamp_min(smallest)
        shift = as_stored(scale * mean_code - mean_weight, stored_dtype)
        candidate = error(scale, shift)
        better = candidate < best_error
        best_scale, best_shift = torch.where(better, scale, best_scale), torch.where(better, shift, best_shift)
        best_error = torch.where(better, candidate, best_error)
    return best_scale, best_shift
