"""Scoring cost: LIM over N calibration tokens vs one plain forward pass over the same tokens (goal: ratio ≤ 1.15).

Both run the decoder stack only (`model.base_model`, no language-model head, `use_cache=False`, `no_grad`), which is
what `lim_scores` runs; the difference is the forward hooks and the per-token cosine. The two are timed side by side
in one process, interleaved, `--repeats` times.

    python bench/scoring.py --models smollm2-135m --tokens 2048 --repeats 5
    python bench/scoring.py --quick
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import common


GOAL = 1.15


def plain_forward(model, batches) -> None:
    """One forward pass of the decoder stack over every batch, as `lim_scores` runs it, without hooks."""
    import torch

    with torch.no_grad():
        for batch in batches:
            model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)


def measure(name: str, folder: str, dtype: str, tokens: int, seq_len: int, batch_size: int, repeats: int) -> dict:
    """Side-by-side timings of the plain pass and of LIM on one model."""
    from optimum_layerwise.importance.lim import lim_scores

    model = common.load_model(folder, dtype)
    batches = common.calibration(name, folder, tokens, seq_len, batch_size)
    plain_forward(model, batches[:1])  # warm-up (allocator, kernels)
    times = common.interleave(
        {
            "plain": lambda: common.timed(lambda: plain_forward(model, batches))[0],
            "lim": lambda: common.timed(lambda: lim_scores(model, batches))[0],
        },
        repeats,
    )
    ratio = common.ratio_summary(times["lim"], times["plain"])
    return {
        "dtype": dtype,
        "tokens": sum(batch.num_tokens for batch in batches),
        "seq_len": seq_len,
        "batch_size": batch_size,
        "plain_s": common.summarize(times["plain"]),
        "lim_s": common.summarize(times["lim"]),
        "ratio": ratio,
        "goal": GOAL,
        "goal_met": ratio["median"] <= GOAL,
    }


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark and write its result file (returned)."""
    parser = common.bench_parser("scoring", __doc__.split("\n\n")[0], repeats=5)
    parser.add_argument("--tokens", type=int, default=2048, help="calibration tokens (default: 2048)")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--dtype", choices=common.DTYPES, default="float32", help="default: float32 (as stored)")
    args = common.start(parser, argv)
    if args.quick:
        args.tokens, args.seq_len, args.batch_size = 512, 128, 2

    def report(name: str, result: dict) -> list[str]:
        ratio = result["ratio"]
        return [f"{name}: LIM / plain = {ratio['median']:.3f} (min {ratio['min']:.3f}, max {ratio['max']:.3f})"]

    return common.run_per_model(
        args,
        lambda name, folder, _: measure(
            name, folder, args.dtype, args.tokens, args.seq_len, args.batch_size, args.repeats
        ),
        report,
    )


if __name__ == "__main__":
    main()
