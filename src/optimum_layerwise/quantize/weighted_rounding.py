"""Importance-weighted choice of the scale and shift of group-wise round-to-nearest (`optimizer="imatrix"`).

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

from collections.abc import Callable

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
    grouped: torch.Tensor,
    importance: torch.Tensor,
    bits: int,
    stored_dtype: torch.dtype,
    sym: bool = False,
    search: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and shift of each group (row of `grouped`) minimising the importance-weighted squared rounding error.

    With `sym=True` the grid is symmetric: `shift = h · scale` with `h = 2**(bits - 1)` (a power-of-two multiple, so
    exact in `stored_dtype`), i.e. `dequantized = (codes − h) · scale` with signed codes in `[−h, h − 1]`: the integer
    grid of GPT-Q and compressed-tensors without zero-points. Only the scale is searched.

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
        sym (`bool`, *optional*, defaults to `False`):
            Symmetric grid (see above) instead of an affine one.
        search (`bool`, *optional*, defaults to `True`):
            `False` keeps each group's full range (or absolute maximum): plain round-to-nearest.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: `(scale, shift)`, each `(groups, 1)` in the dtype of `grouped` and
        exactly representable in `stored_dtype`.
    """
    top, half = 2**bits - 1, 2 ** (bits - 1)
    smallest = torch.finfo(stored_dtype).tiny
    weights = importance.to(grouped.dtype)
    weights = weights + 1e-6 * weights.mean(dim=1, keepdim=True).clamp_min(1e-30)  # all-zero rows: unweighted
    if sym:  # the range [-absmax, absmax] over the grid's 2**bits - 1 steps, as compressed-tensors' observer does
        high = grouped.abs().amax(dim=1, keepdim=True)
        low = -high
    else:
        low, high = grouped.amin(dim=1, keepdim=True), grouped.amax(dim=1, keepdim=True)

    def error(scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return (weights * (grouped - _rounded(grouped, scale, shift, top)[1]) ** 2).sum(dim=1, keepdim=True)

    best_scale = best_shift = torch.zeros_like(low)
    best_error = torch.full_like(low, torch.inf)

    def consider(scale: torch.Tensor, shift_of: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        """Keep, per group, `scale` (as stored) and its shift where they round with less error than the best so far;
        `shift_of(stored scale)` gives the affine shift (a symmetric grid's is `half · scale`: `None`)."""
        nonlocal best_scale, best_shift, best_error
        scale = as_stored(scale, stored_dtype).clamp_min(smallest)
        shift = scale * half if sym else as_stored(shift_of(scale), stored_dtype)
        candidate = error(scale, shift)
        better = candidate < best_error
        best_scale, best_shift = torch.where(better, scale, best_scale), torch.where(better, shift, best_shift)
        best_error = torch.where(better, candidate, best_error)

    for step in range(SEARCH_STEPS + 1 if search else 1):
        fraction = 1.0 - (1.0 - SMALLEST_RANGE) * step / SEARCH_STEPS
        consider((high - low) * fraction / top, lambda scale, fraction=fraction: -low * fraction)
    for _ in range(REFITS if search else 0):
        codes, _ = _rounded(grouped, best_scale, best_shift, top)
        if sym:  # least squares of `grouped ≈ (codes - half) · scale` through the origin
            centered_codes, centered_weights, shift_of = codes - half, grouped, None
        else:  # least squares of `grouped ≈ codes · scale - shift`
            total = weights.sum(dim=1, keepdim=True)
            mean_code = (weights * codes).sum(dim=1, keepdim=True) / total
            mean_weight = (weights * grouped).sum(dim=1, keepdim=True) / total
            centered_codes, centered_weights = codes - mean_code, grouped - mean_weight

            def shift_of(scale: torch.Tensor, code=mean_code, weight=mean_weight) -> torch.Tensor:
                return scale * code - weight

        variance = (weights * centered_codes**2).sum(dim=1, keepdim=True)
        covariance = (weights * centered_codes * centered_weights).sum(dim=1, keepdim=True)
        slope = torch.where(variance > 0, covariance / variance.clamp_min(1e-30), best_scale)
        consider(slope, shift_of)
    return best_scale, best_shift
