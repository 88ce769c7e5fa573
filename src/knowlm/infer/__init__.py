"""Generation: the TextGenerator seam and its factory, batched engine, decoding presets, chat and batch cases."""

from knowlm.decoding import PRESETS, DecodingParams, preset
from knowlm.infer.engine import Generator
from knowlm.infer.generator import Generation, TextGenerator, load_generator

__all__ = ["TextGenerator", "load_generator", "DecodingParams", "PRESETS", "preset", "Generation", "Generator"]
