"""Knowledge extraction (NER, RE, EE): records, schemas, prompts, parsing, scoring, converters.

Stable entry points (DESIGN §5)::

    batch_schema(items, split_num)                       -> list[list]
    parse_output(output, task, schema, style, text)      -> IE record fragment (never raises on model output)
    score(gold_records, pred_records, match)             -> the `knowlm eval --report` object
    extract_texts(generator, texts, task, schema, ...)   -> IE records with parse status
    build_prompt / gold_output / records_to_instructions -> the one prompt builder and SFT data

Nothing here imports torch, ``knowlm.infer`` or ``knowlm.models``: extraction takes any
``knowlm.infer.TextGenerator``. Only ``knowlm.ie.constrained`` imports torch/xgrammar, when called.
The demo's extraction stage, which loads a model, is ``knowlm.demo_extract``.
"""

from knowlm.ie.extract import extract_texts
from knowlm.ie.instructions import records_to_instructions
from knowlm.ie.metrics import score
from knowlm.ie.parsing import parse_output
from knowlm.ie.prompts import build_prompt, gold_output
from knowlm.ie.records import detect_lang, is_na, validate
from knowlm.ie.schema import DEFAULT_SPLIT_NUM, EventType, Schema, batch_schema, load_schema, make_schema


__all__ = [
    "batch_schema",
    "parse_output",
    "score",
    "extract_texts",
    "build_prompt",
    "gold_output",
    "records_to_instructions",
    "make_schema",
    "load_schema",
    "Schema",
    "EventType",
    "DEFAULT_SPLIT_NUM",
    "validate",
    "is_na",
    "detect_lang",
]
