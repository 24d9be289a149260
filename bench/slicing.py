"""Dynamic vs constant slicing: parameters, forward-pass time against the unsliced model (side by side, rounds
interleaved) and perplexity on held-out text the rotation never saw, for each target sparsity.

Every variant is sliced on load with `LayerwiseSlicingConfig` from the same calibration windows (Shakespeare, the
offline calibration corpus); perplexity is measured on another corpus (`--eval-dataset`, default KJV). The unsliced
model is scored the same way, so each row also gives the perplexity ratio. One fresh process per model.

    python bench/slicing.py --models smollm2-135m qwen2.5-coder-0.5b --sparsities 0.1 0.2 0.3 --bases default 0
    python bench/slicing.py --quick
"""

from __future__ import annotations

from collections.abc import Sequence

import common


def forward_s(model, prompt) -> float:
    """Seconds of one forward pass over `prompt` (no cache)."""
    import torch

    with torch.no_grad():
        return common.timed(lambda: model(prompt, use_cache=False))[0]


def slicing_task(
    name: str,
    folder: str,
    sparsities: list[float],
    importances: list[str],
    bases: list[float | None],
    num_samples: int,
    seq_len: int,
    eval_dataset: str,
    eval_windows: int,
    prompt_tokens: int,
    repeats: int,
) -> dict:
    """Child task: every (importance, sparsity) variant of one model, each against the unsliced model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optimum_layerwise import LayerwiseSlicingConfig
    from optimum_layerwise.evaluation.perplexity import perplexity

    tiny = name == common.TINY
    tokenizer = None if tiny else AutoTokenizer.from_pretrained(folder)
    generator = torch.Generator().manual_seed(1)
    vocab = common.tiny_config().vocab_size
    calibration = torch.randint(0, vocab, (64, seq_len), generator=generator).tolist() if tiny else "shakespeare"
    held_out = torch.randint(0, vocab, (8, seq_len), generator=generator).tolist() if tiny else eval_dataset

    def score(model) -> float:
        bos = False if tiny else None  # the tiny model has no tokenizer
        return perplexity(
            model, held_out, tokenizer, seq_len=seq_len, num_windows=eval_windows, prepend_bos=bos
        ).perplexity

    original = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    prompt = common.prompt_ids(name, folder, prompt_tokens)
    parameters = sum(p.numel() for p in original.parameters())
    result = {"parameters": parameters, "perplexity": score(original), "variants": {}}
    chosen = [(i, s, b) for i in importances for s in sparsities for b in (bases if i != "constant" else [None])]
    for importance, sparsity, base in chosen:
        config = LayerwiseSlicingConfig(
            sparsity=sparsity, importance=importance, base=base, dataset=calibration, tokenizer=tokenizer,
            num_samples=num_samples, seq_len=seq_len, quality_windows=0,
        )  # fmt: skip
        slice_s, model = common.timed(
            lambda config=config: AutoModelForCausalLM.from_pretrained(
                folder, dtype=torch.float32, quantization_config=config
            ).eval()
        )
        forward_s(model, prompt[:, :16])  # warm-up
        runs = common.interleave(
            {
                "sliced": lambda model=model: forward_s(model, prompt),
                "unsliced": lambda: forward_s(original, prompt),
            },
            repeats,
        )
        plan = model.config.quantization_config.plan
        sliced_parameters = sum(p.numel() for p in model.parameters())
        ppl = score(model)
        result["variants"][f"{importance}-{sparsity}" + (f"-base{base}" if base is not None else "")] = {
            "importance": importance,
            "sparsity": sparsity,
            "base": config.slicing_base(),
            "achieved_sparsity": plan.sparsity,
            "widths": list(plan.widths),
            "slice_s": slice_s,
            "parameters": sliced_parameters,
            "parameter_ratio": sliced_parameters / parameters,
            "forward_s": common.summarize(runs["sliced"]),
            "forward_ratio": common.ratio_summary(runs["sliced"], runs["unsliced"]),
            "perplexity": ppl,
            "perplexity_ratio": ppl / result["perplexity"],
        }
    return result


def report(name: str, result: dict) -> list[str]:
    lines = [f"{name}: {result['parameters']:,} parameters, perplexity {result['perplexity']:.2f} unsliced"]
    for variant, row in result["variants"].items():
        lines.append(
            f"  {variant:>16}: sparsity {row['achieved_sparsity']:.3f}, parameters x{row['parameter_ratio']:.3f}, "
            f"forward x{row['forward_ratio']['median']:.3f}, perplexity {row['perplexity']:.2f} "
            f"(x{row['perplexity_ratio']:.3f}), sliced in {row['slice_s']:.0f} s"
        )
    return lines


def main(argv: Sequence[str] | None = None):
    """Run the benchmark and write its result file (returned)."""
    parser = common.bench_parser("slicing", __doc__.split("\n\n")[0], models=("smollm2-135m",))
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--importances", nargs="+", default=["constant", "lim"])
    parser.add_argument(
        "--bases",
        type=lambda value: None if value == "default" else float(value),
        nargs="+",
        default=[None],
        help="slicing bases of the importance-based variants ('default': sparsity / 2)",
    )
    parser.add_argument("--num-samples", type=int, default=128, help="calibration windows (default: 128)")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per window (default: 256)")
    parser.add_argument("--eval-dataset", default="kjv", help="held-out corpus (default: kjv)")
    parser.add_argument("--eval-windows", type=int, default=16, help="held-out windows (default: 16)")
    parser.add_argument("--prompt-tokens", type=int, default=512, help="tokens of the timed forward (default: 512)")
    args = common.start(parser, argv)
    if args.quick:
        args.sparsities, args.num_samples, args.seq_len, args.eval_windows, args.prompt_tokens = [0.25], 16, 32, 4, 32

    def measure(name, folder, workdir):
        return common.run_isolated(
            "slicing", "slicing_task", timeout=6 * 3600, name=name, folder=folder, sparsities=args.sparsities,
            importances=args.importances, bases=args.bases, num_samples=args.num_samples, seq_len=args.seq_len,
            eval_dataset=args.eval_dataset, eval_windows=args.eval_windows, prompt_tokens=args.prompt_tokens,
            repeats=args.repeats,
        )  # fmt: skip

    return common.run_per_model(args, measure, report)


if __name__ == "__main__":
    main()
