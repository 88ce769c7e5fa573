"""The HTTP routes, one router per family (like vLLM's entrypoints), all around one :class:`Service`:

    knowlm   POST /generate, GET /is_ready             KnowLM's own server
    openai   POST /v1/completions, /v1/chat/completions OpenAI-compatible
    extract  POST /extract                              IE records
    tokens   POST /tokenize, /detokenize                vLLM's tokenizer routes
    ops      GET /health, /metrics, /v1/models, /version
"""

from knowlm.serve.routes import extract, knowlm, ops, openai, tokens

ROUTERS = (knowlm.router, openai.router, tokens.router, extract.router, ops.router)

__all__ = ["ROUTERS"]
