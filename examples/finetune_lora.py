"""Fine-tune a LoRA adapter on a layer-wise checkpoint with transformers' Trainer (QLoRA-style) and compare perplexity.

The packed weights stay frozen; the adapter trains on windows of `--train` text and is scored on separate windows of
`--evaluation` text before and after. Works for optimum-quanto and GPT-Q layer-wise checkpoints.

python examples/finetune_lora.py my-model-6bit --train shakespeare --evaluation shakespeare --steps 30
"""

import argparse

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

from optimum_layerwise.evaluation.perplexity import evaluation_windows, perplexity


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("checkpoint", help="a layer-wise checkpoint folder (or Hub id)")
parser.add_argument("--train", default="shakespeare", help="training text: corpus name or text file")
parser.add_argument("--evaluation", default="kjv", help="held-out text: corpus name or text file")
parser.add_argument("--steps", type=int, default=30)
parser.add_argument("--seq-len", type=int, default=128)
parser.add_argument("--windows", type=int, default=8, help="held-out windows")
parser.add_argument("--rank", type=int, default=8)
parser.add_argument("--targets", default="q_proj,v_proj", help="comma-separated Linear names to adapt")
parser.add_argument("--output", default="lora-adapter", help="folder for the adapter")
args = parser.parse_args()

tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
model = AutoModelForCausalLM.from_pretrained(args.checkpoint)
before = perplexity(model, args.evaluation, tokenizer, seq_len=args.seq_len, num_windows=args.windows).perplexity

config = LoraConfig(
    r=args.rank, lora_alpha=2 * args.rank, target_modules=args.targets.split(","), task_type="CAUSAL_LM"
)
model = get_peft_model(model, config)  # a plain LoraConfig: PEFT wraps the packed Linears
model.print_trainable_parameters()
windows, _ = evaluation_windows(args.train, tokenizer, seq_len=args.seq_len, num_windows=4 * args.steps)
examples = [{"input_ids": torch.tensor(window), "labels": torch.tensor(window)} for window in windows]
training = TrainingArguments(
    args.output, max_steps=args.steps, per_device_train_batch_size=4, learning_rate=2e-4, logging_steps=10,
    report_to=[], use_cpu=not torch.cuda.is_available(), save_strategy="no",
)  # fmt: skip
Trainer(model=model, args=training, train_dataset=examples).train()
model.save_pretrained(args.output)

after = perplexity(model, args.evaluation, tokenizer, seq_len=args.seq_len, num_windows=args.windows).perplexity
print(f"held-out perplexity: {before:.2f} before, {after:.2f} after {args.steps} LoRA steps; adapter in {args.output}")
