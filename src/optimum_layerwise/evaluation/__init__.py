"""Evaluation of layer-wise quantized models: plots now; perplexity, lm-eval tasks and sweeps build on it."""
