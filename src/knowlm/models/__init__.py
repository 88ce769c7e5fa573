"""Loading models and tokenizers, prompt templates, tiny test models, output manifests."""

from knowlm.models.loading import apply_adapter, load, load_tokenizer, prepare_tokenizer, resolve_model_path
from knowlm.models.manifest import read_manifest, write_manifest
from knowlm.models.templates import DEFAULT_TEMPLATE, manifest_template, resolve_template

__all__ = [
    "load",
    "load_tokenizer",
    "prepare_tokenizer",
    "apply_adapter",
    "resolve_model_path",
    "resolve_template",
    "manifest_template",
    "DEFAULT_TEMPLATE",
    "read_manifest",
    "write_manifest",
]
