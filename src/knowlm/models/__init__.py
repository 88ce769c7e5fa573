"""Loading models and tokenizers, prompt templates, tiny test models, output manifests."""

from knowlm.models.loading import apply_adapter, load, load_tokenizer, resolve_model_path, resolve_template
from knowlm.models.manifest import read_manifest, write_manifest

__all__ = ["load", "load_tokenizer", "apply_adapter", "resolve_model_path", "resolve_template", "read_manifest", "write_manifest"]
