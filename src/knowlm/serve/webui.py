"""``knowlm webui``: Gradio pages over the same batching engine as the HTTP server.

Three tabs, as KnowLM had: a completion page for base models, an instruction page
(instruction, input, decoding sliders, streaming), and an extraction page (task, schema, text
-> a table of entities / triples / events, the IE record and the raw model output). Binds
127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json
import os
from typing import Iterator

from knowlm.errors import KnowlmError
from knowlm.decoding import DecodingParams
from knowlm.serve.errors import ApiError
from knowlm.serve.service import Service

TABLE_HEADERS = ["kind", "type / relation", "text / head / trigger", "tail / arguments"]


def record_rows(record: dict) -> list[list[str]]:
    """An IE record as table rows: entities, relations (triples) and events."""
    rows = []
    for e in record.get("entities", []):
        span = f" [{e['start']}:{e['end']}]" if "start" in e else ""
        rows.append(["entity", str(e.get("type", "")), str(e.get("text", "")) + span, ""])
    for r in record.get("relations", []):
        rows.append(["relation", str(r.get("relation", "")), str(r.get("head", "")), str(r.get("tail", ""))])
    for ev in record.get("events", []):
        args = "; ".join(f"{a.get('role', '')}={a.get('text', '')}" for a in ev.get("arguments", []))
        rows.append(["event", str(ev.get("type", "")), str(ev.get("trigger", "")), args])
    return rows


def parse_schema_text(task: str, text: str):
    """The schema box: JSON (list / dict) or comma-separated names."""
    text = (text or "").strip()
    if not text:
        raise KnowlmError("the schema is empty: give type names (comma-separated) or JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return [part.strip() for part in text.replace("，", ",").split(",") if part.strip()]


class WebUI:
    """The page callbacks; kept apart from Gradio so they can be called directly."""

    def __init__(self, service: Service):
        self.service = service

    def _stream(self, model: str, prompt: str, params: DecodingParams) -> Iterator[str]:
        target = self.service.resolve(model)
        handle = self.service.submit(target, prompt, params)
        text = ""
        try:
            for event in handle:
                if event.error:
                    yield text + f"\n[error: {event.error}]"
                    return
                text += event.text
                yield text
        finally:
            if not handle.done.is_set():
                handle.cancel()  # the page was closed or the run was stopped

    def complete(self, model, prompt, max_tokens, temperature, top_p) -> Iterator[str]:
        params = self._params(max_tokens, temperature, top_p, 0, 1.0)
        yield from self._stream(model, prompt, params)

    def instruct(self, model, instruction, input_text, max_tokens, temperature, top_p, top_k, repetition_penalty) -> Iterator[str]:
        target = self.service.resolve(model)
        params = self._params(max_tokens, temperature, top_p, top_k, repetition_penalty, self.service.template_stops(target))
        yield from self._stream(model, self.service.prompt(target, instruction, input_text), params)

    def extract(self, model, task, schema_text, text, lang, constrained, max_tokens):
        from knowlm.ie.extract import extract_texts

        target = self.service.resolve(model)
        generator = self.service.generator(target)
        params = DecodingParams(max_new_tokens=int(max_tokens))
        try:
            record = extract_texts(generator, [text], task, parse_schema_text(task, schema_text), lang=lang, constrained=bool(constrained), params=params)[0]
        except (KnowlmError, ApiError) as exc:
            return [], json.dumps({"error": str(exc)}, ensure_ascii=False), "", f"error: {exc}"
        rows = record_rows(record)
        raw = "\n---\n".join(generator.last_outputs)
        status = f"parse status: {record.get('parse_status')} · {len(rows)} item(s) · {len(generator.last_outputs)} prompt(s)"
        return rows, json.dumps(record, ensure_ascii=False, indent=2), raw, status

    def _params(self, max_tokens, temperature, top_p, top_k, repetition_penalty, stops=()) -> DecodingParams:
        return DecodingParams(
            max_new_tokens=int(max_tokens),
            temperature=float(temperature),
            top_p=float(top_p),
            top_k=int(top_k),
            repetition_penalty=float(repetition_penalty),
            stop=list(stops),
        ).validate()


def build_ui(service: Service):
    """The Gradio Blocks app (not launched)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    ui = WebUI(service)
    names = service.model_names()
    with gr.Blocks(title="knowlm", analytics_enabled=False) as demo:
        gr.Markdown("## knowlm — completion, instructions and knowledge extraction")
        model = gr.Dropdown(names, value=service.default, label="model / adapter", elem_id="model")
        with gr.Tab("Completion", elem_id="tab-completion"):
            prompt = gr.Textbox(label="prompt", lines=4, elem_id="completion-prompt")
            with gr.Row():
                c_max = gr.Slider(1, 1024, value=64, step=1, label="max tokens")
                c_temp = gr.Slider(0, 2, value=0.7, step=0.05, label="temperature")
                c_top_p = gr.Slider(0.05, 1, value=0.9, step=0.05, label="top p")
            c_run = gr.Button("Complete", variant="primary", elem_id="completion-run")
            c_out = gr.Textbox(label="completion", lines=8, elem_id="completion-output")
            c_run.click(ui.complete, [model, prompt, c_max, c_temp, c_top_p], c_out)
        with gr.Tab("Instruction", elem_id="tab-instruction"):
            instruction = gr.Textbox(label="instruction", lines=3, elem_id="instruction-text")
            input_text = gr.Textbox(label="input", lines=3, elem_id="instruction-input")
            with gr.Row():
                i_max = gr.Slider(1, 1024, value=256, step=1, label="max tokens")
                i_temp = gr.Slider(0, 2, value=0.2, step=0.05, label="temperature")
                i_top_p = gr.Slider(0.05, 1, value=0.75, step=0.05, label="top p")
                i_top_k = gr.Slider(0, 100, value=40, step=1, label="top k")
                i_rep = gr.Slider(1, 2, value=1.3, step=0.05, label="repetition penalty")
            i_run = gr.Button("Generate", variant="primary", elem_id="instruction-run")
            i_out = gr.Textbox(label="answer (streaming)", lines=10, elem_id="instruction-output")
            i_run.click(ui.instruct, [model, instruction, input_text, i_max, i_temp, i_top_p, i_top_k, i_rep], i_out)
        with gr.Tab("Extraction", elem_id="tab-extraction"):
            with gr.Row():
                task = gr.Dropdown(["ner", "re", "ee", "eet", "eea", "spo"], value="ner", label="task", elem_id="extract-task")
                lang = gr.Dropdown(["auto", "zh", "en"], value="auto", label="language")
                e_max = gr.Slider(8, 1024, value=256, step=8, label="max tokens", elem_id="extract-max")
                constrained = gr.Checkbox(False, label="constrained JSON decoding")
            schema = gr.Textbox(label="schema (comma-separated names, or JSON)", value="人物, 地理位置, 组织机构", elem_id="extract-schema")
            text = gr.Textbox(label="text", lines=4, elem_id="extract-text")
            e_run = gr.Button("Extract", variant="primary", elem_id="extract-run")
            status = gr.Markdown(elem_id="extract-status")
            table = gr.Dataframe(headers=TABLE_HEADERS, value=[], label="results", interactive=False, elem_id="extract-table")
            with gr.Row():
                record = gr.Code(label="IE record", language="json", elem_id="extract-record")
                raw = gr.Textbox(label="raw model output", lines=10, elem_id="extract-raw")
            e_run.click(ui.extract, [model, task, schema, text, lang, constrained, e_max], [table, record, raw, status])
    return demo


def launch(service: Service, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Start the engine and serve the pages; returns the Gradio app when ``block`` is False."""
    service.engine.start()
    service.started = True
    demo = build_ui(service)
    demo.queue(default_concurrency_limit=16)
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=not block, share=False, footer_links=[])
    return demo
