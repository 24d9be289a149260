"""Calibration and evaluation data: named corpora, token windows, offline demo models."""
