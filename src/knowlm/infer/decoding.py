"""Decoding parameters live in :mod:`knowlm.decoding` (torch-free, shared with ``knowlm.ie``);
this name keeps ``from knowlm.infer.decoding import ...`` working."""

from knowlm.decoding import PRESETS, DecodingParams, preset

__all__ = ["DecodingParams", "PRESETS", "preset"]
