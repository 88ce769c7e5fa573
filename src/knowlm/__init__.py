"""knowlm: continue pretraining, instruction-tune, edit and serve knowledgeable LLaMA-family models."""

__version__ = "0.1.0"
