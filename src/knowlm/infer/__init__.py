"""Generation: batched engine, decoding presets, interactive chat and batch case runner."""

from knowlm.infer.decoding import PRESETS, DecodingParams, preset
from knowlm.infer.engine import Generation, Generator

__all__ = ["DecodingParams", "PRESETS", "preset", "Generation", "Generator"]
