"""Composition: a request, a model and calibration data in, a plan (and a quantized or sliced model) out."""
