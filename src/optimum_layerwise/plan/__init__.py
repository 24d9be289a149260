"""Values and rules without torch: the request, the quantization and slicing plans, allocation, method registries."""
