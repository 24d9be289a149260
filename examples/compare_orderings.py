"""Compare layer orderings: move layers from 8 to 4 bits in LIM, sensitivity and random order and measure held-out
perplexity at every step (a small version of `optimum-layerwise sweep`).

    python examples/compare_orderings.py --output orderings
"""

import argparse

from transformers import AutoModelForCausalLM, AutoTokenizer

from optimum_layerwise.data.demo_models import DEMO_MODEL, resolve_model
from optimum_layerwise.evaluation.report import sweep_table
from optimum_layerwise.evaluation.sweep import SweepSettings, run_sweep, save_sweep


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default=DEMO_MODEL, help="folder, Hub id or demo model name")
parser.add_argument("--calibration", default="shakespeare", help="calibration corpus or text file")
parser.add_argument("--evaluation", default="kjv", help="held-out corpus or text file")
parser.add_argument("--step", type=int, default=10, help="layers moved per point")
parser.add_argument("--windows", type=int, default=4, help="perplexity windows")
parser.add_argument("--seq-len", type=int, default=512, help="tokens per window")
parser.add_argument("--group-size", type=int, default=128)
parser.add_argument("--output", required=True)
args = parser.parse_args()

path = resolve_model(args.model)
model = AutoModelForCausalLM.from_pretrained(path)
settings = SweepSettings(
    bits=(8, 4),
    orderings=("lim", "sensitivity", "random"),
    random_seeds=(0, 1),
    step=args.step,
    calibration=args.calibration,
    num_samples=8,
    seq_len=args.seq_len,
    evaluation=args.evaluation,
    eval_windows=args.windows,
    eval_seq_len=args.seq_len,
    group_size=args.group_size,
    pruning=(),
)
rows = run_sweep(model, AutoTokenizer.from_pretrained(path), settings)
save_sweep(rows, args.output, title=f"{args.model}: 8->4 bits")
print(sweep_table(rows))
