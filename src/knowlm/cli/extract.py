"""`knowlm extract`: run a model over texts and write IE records with parse status."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from knowlm.cli._common import ALLOW_EMPTY, OVERWRITE, console, decoding_from_flags
from knowlm.errors import KnowlmError
from knowlm.models.templates import DEFAULT_TEMPLATE, TEMPLATES


def extract(
    model: str = typer.Option(..., "--model", "-m", help="Local Hugging Face model directory or hub id."),
    task: str = typer.Option(..., help="ner, re, ee; eet (event types and triggers), eea (arguments of given event types), spo (typed subject/object)."),
    schema: str = typer.Option(..., help='Schema: a JSON file, a JSON list (\'["person","location"]\') or a comma list.'),
    input: Path = typer.Option(..., "--input", "-i", help="JSONL with 'text' (and optional 'id', 'lang', 'source'); .txt: one text per line."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the predicted IE records (JSONL)."),
    adapter: Optional[str] = typer.Option(None, help="PEFT LoRA adapter directory to apply."),
    style: str = typer.Option("json", help="Prompt style: json (IEPile/OneKE) or knowlm (free-text tuples)."),
    lang: str = typer.Option("auto", help="Instruction language: auto (per text), zh or en."),
    wording: Optional[str] = typer.Option(None, help="Prompt wording: full (IEPile/KnowLM) or compact. Default: the model's knowlm.json, else full."),
    split_num: Optional[int] = typer.Option(None, help="Schema items per prompt (default NER 6, RE 4, EE 4; 0 = all in one)."),
    constrained: bool = typer.Option(False, "--constrained/--free", help="Grammar-constrained JSON (xgrammar): only the schema items as keys, in order (the answer may close after any), every answer parses."),
    template: Optional[str] = typer.Option(None, help=f"Prompt template: {', '.join(TEMPLATES)}. Default: the adapter's or model's knowlm.json, else {DEFAULT_TEMPLATE}."),
    batch_size: int = typer.Option(16, help="Prompts decoded together."),
    max_new_tokens: Optional[int] = typer.Option(None, help="Most tokens per answer (ie preset: 512)."),
    max_input_tokens: Optional[int] = typer.Option(None, help="Longest text chunk in tokens; longer texts are split at sentences (default: fit the context)."),
    ground: bool = typer.Option(False, "--ground", help="With --constrained: every span value is a word run of the text (grounded decoding; helps a model that half remembers names, can cost F1)."),
    keep_hallucinated: bool = typer.Option(False, help="Keep spans that do not occur in the text."),
    dtype: str = typer.Option("auto", help="auto, float32, float16, bfloat16."),
    device: str = typer.Option("auto", help="auto, cpu, cuda."),
    backend: str = typer.Option("hf", help="hf (Hugging Face, CPU or GPU) or vllm (vLLM offline engine, CUDA; needs the gpu extra)."),
    compile: bool = typer.Option(False, "--compile", help="hf: static KV cache, compiled with CUDA graphs on a GPU (first batches compile)."),
    overwrite: bool = OVERWRITE,
    allow_empty: bool = ALLOW_EMPTY,
) -> None:
    """Extract entities, relations or events from texts with an instruction-tuned model.

    Texts x schema batches are decoded in batches; long texts are chunked at sentence ends and
    merged with offsets; each record carries parse_status (ok / partial / failed) and reasons.

    Example: knowlm extract -m demo-work/ie --task re --schema '["located in","place of birth"]' -i demo-work/ie-after/gold.jsonl -o demo-work/examples/pred.jsonl

    On a GPU, --backend vllm decodes with vLLM (same prompts, schema and parser; --constrained uses vLLM's
    structured outputs with the same JSON schema).
    """
    from knowlm.ie.extract import extract_texts
    from knowlm.ie.schema import check_task, load_schema
    from knowlm.infer import load_generator
    from knowlm.utils.jsonl import JsonlStats, iter_jsonl, open_text, write_jsonl
    from knowlm.utils.outputs import check_output

    task = check_task(task)
    schema_obj = load_schema(task, schema)
    if lang not in ("auto", "zh", "en"):
        raise KnowlmError(f"--lang must be auto, zh or en, got {lang!r}")
    if ground and (not constrained or backend != "hf"):
        raise KnowlmError("--ground needs --constrained and the hf backend")
    if not input.is_file():
        raise KnowlmError(f"input file not found: {input}")
    check_output(output, overwrite=overwrite, inputs=[input, schema, model, adapter], flag="--output")
    stats = JsonlStats()
    if input.suffix == ".txt":
        with open_text(input) as handle:
            texts = [{"id": str(i), "text": line.rstrip("\n")} for i, line in enumerate(handle) if line.strip()]
    else:
        texts = []
        for record in iter_jsonl(input, stats):
            if not isinstance(record.get("text"), str):
                stats.skip("no_text", 0)
                continue
            texts.append(record)
    if not texts:
        if not allow_empty:
            raise KnowlmError(f"{input}: no texts to extract from (JSONL lines need a 'text' field); --allow-empty writes an empty file")
        write_jsonl(output, [])
        console.print(f"{input} holds no texts; wrote an empty {output} (--allow-empty).")
        return
    params = decoding_from_flags("ie", max_new_tokens=max_new_tokens)
    generator = load_generator(model, adapter, template, dtype=dtype, device=device, backend=backend, compile=compile, ie_wording=wording)
    run: dict = {}
    records = extract_texts(
        generator, texts, task, schema_obj, lang=lang, style=style, split_num=split_num, constrained=constrained,
        params=params, batch_size=batch_size, max_input_tokens=max_input_tokens, progress=True,
        drop_hallucinated=not keep_hallucinated, stats=run, ground=ground,
    )
    write_jsonl(output, records)
    field = {"ner": "entities", "re": "relations", "ee": "events"}[task]
    found = sum(len(r[field]) for r in records)
    skipped = sum(stats.skipped.values())
    console.print(
        f"Extracted {found} {field} from {len(records)} texts ({run['prompts']} prompts, {run['generated_tokens']} tokens "
        f"in {run['generate_seconds']:.1f}s, template {generator.template!r}, style {style}, wording {getattr(generator, 'ie_wording', None) or 'full'}"
        f"{', constrained' if constrained else ''}); {run['failed_records']} records failed to parse, "
        f"{run['chunked_texts']} long texts were chunked, {skipped} input lines skipped; wrote {output}."
    )


def register(app: typer.Typer) -> None:
    app.command("extract")(extract)
