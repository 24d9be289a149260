"""Dynamic layer-wise slicing: rotate the residual stream by its principal axes (SliceGPT) and give each decoder
layer its own width from its importance (DynamicSlicing), so that the average slicing ratio meets a target."""
