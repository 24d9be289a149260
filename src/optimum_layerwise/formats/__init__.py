"""Files other tools read: model cards, the importance heatmap, exports to dense, compressed-tensors and GGUF."""
