"""The ordering sweep (paper Fig. 2, Tables 1 and 4): move layers from the high to the low level one step at a time in
the order an importance score gives, and measure size and quality at every step.

Every layer is quantized once per level; each point of a curve only swaps prepared modules in and evaluates, so a
sweep costs one quantization per layer and level plus its evaluations. The swapped-in modules hold the dequantized
weights (the same logits as the packed modules, at full-precision speed; see
[`~optimum_layerwise.swapping.LayerVersions`]); model sizes are the packed sizes. Identical bit maps (e.g. the end
points that all orderings share) are evaluated once.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from transformers.utils import logging

from ..importance import compute_importance
from ..model.layers import decoder_layers_path, set_submodule
from ..plan.allocation import allocate_bits, importance_order
from ..plan.fields import average_bits
from ..quantize.swapping import LayerVersions
from ..utils.atomic import atomic_file, atomic_write_text
from .perplexity import evaluation_windows, score_windows
from .summary import memory_table


logger = logging.get_logger(__name__)

DEFAULT_ORDERINGS = ("lim", "reverse_lim", "zd", "reverse_zd", "sensitivity", "random")


@dataclass
class SweepSettings:
    """What a sweep measures.

    Args:
        bits (`tuple[int, int]`): High and low level, e.g. `(4, 2)` or `(8, 4)`.
        orderings (`Sequence[str]`): Importance methods to compare; `"random"` runs once per seed.
        random_seeds (`Sequence[int]`): Seeds of the random orderings.
        step (`int`): Layers moved to the low level per point.
        calibration (`str`): Calibration corpus for LIM.
        num_samples (`int`), seq_len (`int`): Calibration windows and their length.
        evaluation (`str`): Held-out corpus for perplexity (must not overlap `calibration`).
        eval_windows (`int`), eval_seq_len (`int`): Perplexity windows and their length.
        group_size (`int`): Quantization group size.
        backend (`str`): Quantization backend.
        tasks (`Sequence[str]`): lm-eval tasks to run at every point (empty = perplexity only).
        task_limit (`int`): Examples per task.
        references (`bool`): Also measure the unquantized and the all-8-bit model.
        pruning (`Sequence[str]`): Orderings for the pruning comparison (paper §6.1): instead of moving layers to the
            low level, remove the least important layers from the all-high model until it is as small.
    """

    bits: tuple[int, int] = (4, 2)
    orderings: Sequence[str] = DEFAULT_ORDERINGS
    random_seeds: Sequence[int] = (0, 1, 2)
    step: int = 3
    calibration: str = "shakespeare"
    num_samples: int = 32
    seq_len: int = 512
    evaluation: str = "kjv"
    eval_windows: int = 8
    eval_seq_len: int = 512
    group_size: int | None = 128
    backend: str = "quanto"
    tasks: Sequence[str] = ()
    task_limit: int | None = 100
    references: bool = True
    pruning: Sequence[str] = ("lim", "depth")


@contextlib.contextmanager
def pruned(model: nn.Module, keep: Sequence[int]) -> Iterator[None]:
    """Temporarily keep only the decoder layers `keep` (in order), as layer-pruning methods do. Layer indices used by
    the KV cache (`layer_idx`) and per-layer config lists (`layer_types`) follow the kept layers."""
    path = decoder_layers_path(model)
    layers = model.get_submodule(path)
    config = model.config.get_text_config(decoder=True)
    saved_config = (config.num_hidden_layers, getattr(config, "layer_types", None))
    indexed = [
        (module, module.layer_idx)
        for index in keep
        for module in layers[index].modules()
        if isinstance(getattr(module, "layer_idx", None), int)
    ]
    set_submodule(model, path, nn.ModuleList([layers[i] for i in keep]))
    config.num_hidden_layers = len(keep)
    if saved_config[1] is not None:
        config.layer_types = [saved_config[1][i] for i in keep]
    for module, original in indexed:
        module.layer_idx = keep.index(original)
    try:
        yield
    finally:
        set_submodule(model, path, layers)
        config.num_hidden_layers, layer_types = saved_config
        if layer_types is not None:
            config.layer_types = layer_types
        for module, original in indexed:
            module.layer_idx = original


def _orderings(settings: SweepSettings) -> list[tuple[str, int | None]]:
    runs = []
    for name in settings.orderings:
        seeds = settings.random_seeds if name == "random" else [None]
        runs.extend((name, seed) for seed in seeds)
    return runs


def run_sweep(model: nn.Module, tokenizer: Any, settings: SweepSettings) -> list[dict[str, Any]]:
    """Measure every ordering's curve, the references and the pruning comparison.

    Args:
        model (`PreTrainedModel`):
            The full-precision model (its Linear modules are swapped during the sweep and restored at the end).
        tokenizer:
            Its tokenizer.
        settings ([`SweepSettings`]):
            What to measure.

    Returns:
        `list[dict]`: one row per measured point: `kind` (`"quantized"`, `"reference"`, `"pruned"`), `ordering`,
        `seed`, `layers_low`, `avg_bits`, `model_bytes`, `perplexity`, `seconds`, task metrics, `layer_bits`.
    """
    high = settings.bits[0]
    swapper = LayerVersions(model, settings.backend, settings.group_size, simulate=True)
    num_layers = len(swapper.layers)
    evaluated: dict[tuple, dict[str, Any]] = {}
    windows, context = evaluation_windows(
        settings.evaluation, tokenizer, seq_len=settings.eval_seq_len, num_windows=settings.eval_windows
    )

    def evaluate(key: tuple, model_bytes: int) -> dict[str, Any]:
        if key not in evaluated:
            start = time.perf_counter()
            result = score_windows(model, windows, context)
            metrics: dict[str, Any] = {"perplexity": result.perplexity, "model_bytes": model_bytes}
            if settings.tasks:
                from .tasks import evaluate_tasks

                for task, values in evaluate_tasks(
                    model, tokenizer, settings.tasks, limit=settings.task_limit
                ).items():
                    metrics.update({f"{task}/{metric}": value for metric, value in values.items()})
            metrics["seconds"] = round(time.perf_counter() - start, 2)
            evaluated[key] = metrics
        return evaluated[key]

    rows: list[dict[str, Any]] = []
    scores = {}
    pruning_runs = [(name, None) for name in settings.pruning if (name, None) not in _orderings(settings)]
    for name, seed in _orderings(settings) + pruning_runs:
        scores[name, seed] = compute_importance(
            model,
            name,
            settings.calibration,
            tokenizer,
            num_samples=settings.num_samples,
            seq_len=settings.seq_len,
            seed=seed or 0,
            bits=settings.bits,
            backend=settings.backend,
            group_size=settings.group_size,
        )

    if settings.references:
        swapper.apply(None)
        rows.append(
            {
                "kind": "reference",
                "ordering": "unquantized",
                "avg_bits": None,
                **evaluate(("fp",), swapper.nbytes(None)),
            }
        )
        if 8 not in settings.bits:
            all_8 = dict.fromkeys(range(num_layers), 8)
            swapper.apply(all_8)
            rows.append(
                {
                    "kind": "reference",
                    "ordering": "all-8",
                    "avg_bits": 8.0,
                    **evaluate((8,) * num_layers, swapper.nbytes(all_8)),
                }
            )

    points = sorted(set(range(0, num_layers + 1, settings.step)) | {num_layers})
    for name, seed in _orderings(settings):
        layer_scores = scores[name, seed]
        for layers_low in logging.tqdm(points, desc=f"Sweep {name}{'' if seed is None else f' seed {seed}'}"):
            layer_bits = allocate_bits(layer_scores, settings.bits, num_low_bit_layers=layers_low)
            swapper.apply(layer_bits)
            metrics = evaluate(tuple(layer_bits[i] for i in range(num_layers)), swapper.nbytes(layer_bits))
            rows.append(
                {
                    "kind": "quantized",
                    "ordering": name,
                    "seed": seed,
                    "layers_low": layers_low,
                    "avg_bits": average_bits(layer_bits),
                    **metrics,
                    "layer_bits": layer_bits,
                }
            )

    all_high = dict.fromkeys(range(num_layers), high)
    swapper.apply(all_high)
    full_bytes = swapper.nbytes(all_high)
    layer_bytes = full_bytes - swapper.nbytes(all_high, layers=range(1, num_layers))
    sizes = {row["layers_low"]: (row["model_bytes"], row["avg_bits"]) for row in rows if row["kind"] == "quantized"}
    for name in settings.pruning:
        order = importance_order(scores[name, None])
        for layers_low, (model_bytes, avg_bits) in sorted(sizes.items()):
            removed = round((full_bytes - model_bytes) / layer_bytes)
            if not 0 < removed < num_layers:
                continue
            keep = sorted(order[: num_layers - removed])
            with pruned(model, keep):
                metrics = evaluate(("pruned", tuple(keep)), swapper.nbytes(all_high, layers=keep))
            rows.append(
                {
                    "kind": "pruned",
                    "ordering": f"prune-{name}",
                    "layers_removed": removed,
                    "equivalent_layers_low": layers_low,
                    "avg_bits": avg_bits,
                    **metrics,
                }
            )
    swapper.apply(None)
    return rows


def save_sweep(rows: list[dict[str, Any]], output_dir: str | os.PathLike, *, title: str = "") -> dict[str, Path]:
    """Write `sweep.json` (all rows), `sweep.csv`, `memory.md` (Table 4 style) and `sweep.png` (Figure 2 style).

    Returns:
        `dict[str, Path]`: the written files by kind.
    """
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    files = {"json": output / "sweep.json", "csv": output / "sweep.csv", "memory": output / "memory.md"}
    atomic_write_text(files["json"], json.dumps(rows, indent=1, default=str))
    columns = sorted({key for row in rows for key in row if key != "layer_bits"}, key=_column_order)
    with atomic_file(files["csv"]) as staging, staging.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(files["memory"], memory_table(rows) + "\n")
    try:
        from .plots import plot_sweep

        files["plot"] = output / "sweep.png"
        with atomic_file(files["plot"]) as staging:
            plot_sweep(rows, staging, title=title)
    except ImportError as error:
        logger.warning(f"No plot: {error}")
        files.pop("plot")
    return files


_FIRST_COLUMNS = ("kind", "ordering", "seed", "layers_low", "layers_removed", "avg_bits", "model_bytes", "perplexity")


def _column_order(column: str) -> tuple[int, str]:
    return (_FIRST_COLUMNS.index(column) if column in _FIRST_COLUMNS else len(_FIRST_COLUMNS), column)
