"""The torch anatomy of a causal LM: its layers and Linears, the layer walk, offload, footprint, perplexity."""
