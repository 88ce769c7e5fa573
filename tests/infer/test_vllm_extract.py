"""`knowlm extract --backend vllm`: the vLLM offline engine behind the same prompts, schema and parser.

vLLM is CUDA-only, so these tests inject a fake ``vllm`` package into ``sys.modules`` that records every
call (engine arguments, prompts, sampling parameters with their JSON schema per prompt) and answers from
a script; the real engine runs in ``test_gpu_inference.py`` when vLLM and CUDA are present.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field

import pytest

from knowlm.ie.constrained import Bounds, json_schema
from knowlm.ie.prompts import build_prompt
from knowlm.models.templates import get, render

TEXTS = [{"id": "1", "text": "马云在杭州创办了阿里巴巴。"}, {"id": "2", "text": "Marie Curie was born in Warsaw."}]
SCHEMA = ["创办", "born in", "位于"]
EOS = 2


@dataclass
class Completion:
    text: str
    token_ids: list
    finish_reason: str


@dataclass
class Output:
    prompt_token_ids: list
    outputs: list


@dataclass
class Recorder:
    engines: list = field(default_factory=list)  # LLM(**kwargs) per engine
    calls: list = field(default_factory=list)  # (prompts, sampling params, use_tqdm, lora_request) per generate()


def answer(prompt: str) -> str:
    """What the scripted model writes: the relation each text states, [] for the others."""
    request, _ = json.JSONDecoder().raw_decode(prompt[prompt.index('{"instruction"'):])  # the IE prompt inside the template
    found = {"创办": [{"subject": "马云", "object": "阿里巴巴"}], "born in": [{"subject": "Marie Curie", "object": "Warsaw"}]}
    text = request["input"]
    keys = request["schema"]
    return json.dumps({k: (found[k] if k in found and found[k][0]["object"] in text else []) for k in keys}, ensure_ascii=False)


def fake_vllm(monkeypatch, recorder: Recorder, structured_api: bool = True) -> None:
    """A ``vllm`` package with ``LLM``, ``SamplingParams``, structured-output params and ``LoRARequest``."""

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

        def __eq__(self, other):
            return isinstance(other, SamplingParams) and self.kwargs == other.kwargs

        def __repr__(self):
            return f"SamplingParams({self.kwargs})"

    class JsonParams:
        def __init__(self, json=None):
            self.json = json

        def __eq__(self, other):
            return type(other) is type(self) and other.json == self.json

    class LLM:
        def __init__(self, **kwargs):
            recorder.engines.append(kwargs)

        def generate(self, prompts, sampling_params=None, use_tqdm=True, lora_request=None):
            recorder.calls.append((list(prompts), sampling_params, use_tqdm, lora_request))
            outputs = []
            for prompt in prompts:
                text = answer(prompt)
                outputs.append(Output(list(range(len(prompt) // 4)), [Completion(text, list(range(3, 3 + len(text))) + [EOS], "stop")]))
            return outputs

    @dataclass
    class LoRARequest:
        lora_name: str
        lora_int_id: int
        lora_path: str

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.SamplingParams = SamplingParams
    if structured_api:
        sampling.StructuredOutputsParams = JsonParams
    else:
        sampling.GuidedDecodingParams = type("GuidedDecodingParams", (JsonParams,), {})
    lora = types.ModuleType("vllm.lora")
    lora_request = types.ModuleType("vllm.lora.request")
    lora_request.LoRARequest = LoRARequest
    for name, module in (("vllm", vllm), ("vllm.sampling_params", sampling), ("vllm.lora", lora), ("vllm.lora.request", lora_request)):
        monkeypatch.setitem(sys.modules, name, module)
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def expected_prompts(template: str, split: list[list[str]]) -> list[str]:
    return [render(template, *build_prompt("re", doc["text"], batch, lang=lang))
            for doc, lang in zip(TEXTS, ("zh", "en")) for batch in split]


def write_texts(tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in TEXTS), encoding="utf-8")
    return path


RECORDS = [
    {"id": "1", "relations": [{"head": "马云", "relation": "创办", "tail": "阿里巴巴"}]},
    {"id": "2", "relations": [{"head": "Marie Curie", "relation": "born in", "tail": "Warsaw"}]},
]


def sampling_kwargs(**changes) -> dict:
    """What knowlm sends vLLM for the ie preset with --max-new-tokens 48 (greedy)."""
    base = dict(n=1, temperature=0.0, top_p=1.0, top_k=-1, max_tokens=48, min_tokens=0, repetition_penalty=1.0, presence_penalty=0.0,
                frequency_penalty=0.0, logit_bias=None, stop=None, stop_token_ids=None, seed=None, logprobs=None)
    return {**base, **changes}


@pytest.mark.parametrize("structured_api", [True, False], ids=["structured_outputs", "guided_decoding"])
def test_constrained_extract_sends_each_prompts_json_schema_to_vllm(cli, tiny_model_dir, tmp_path, monkeypatch, structured_api):
    recorder = Recorder()
    fake_vllm(monkeypatch, recorder, structured_api)
    out = tmp_path / "pred.jsonl"
    result = cli("extract", "-m", tiny_model_dir, "--task", "re", "--schema", json.dumps(SCHEMA, ensure_ascii=False), "-i", write_texts(tmp_path),
                 "-o", out, "--max-new-tokens", "48", "--split-num", "2", "--backend", "vllm", "--constrained")
    assert result.exit_code == 0, result.stderr
    path = str(tiny_model_dir)
    engine_json = ({"structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True}} if structured_api
                   else {"guided_decoding_backend": "xgrammar:disable-any-whitespace"})
    assert recorder.engines == [dict(model=path, tokenizer=path, dtype="auto", seed=0, gpu_memory_utilization=0.9, tensor_parallel_size=1, **engine_json)]
    split = [["创办", "born in"], ["位于"]]
    (prompts, params, use_tqdm, lora), = recorder.calls
    assert prompts == expected_prompts("alpaca", split) and use_tqdm is True and lora is None
    sampling = sys.modules["vllm.sampling_params"]
    json_params = sampling.StructuredOutputsParams if structured_api else sampling.GuidedDecodingParams
    key = "structured_outputs" if structured_api else "guided_decoding"
    # One SamplingParams per prompt, each with the JSON schema --constrained builds for its schema batch.
    assert params == [sys.modules["vllm"].SamplingParams(**sampling_kwargs(**{key: json_params(json_schema("re", batch, Bounds()))}))
                      for _ in TEXTS for batch in split]
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [{"id": r["id"], "relations": r["relations"]} for r in records] == RECORDS
    assert all(r["parse_status"] == "ok" for r in records)
    # 4 prompts; token counts without the EOS vLLM keeps in token_ids
    tokens = sum(len(answer(p)) for p in prompts)
    assert result.stdout.startswith(f"Extracted 2 relations from 2 texts (4 prompts, {tokens} tokens in ")


def test_free_extract_stops_at_the_template_turn_and_applies_the_adapter(cli, tiny_model_dir, tmp_path, monkeypatch):
    recorder = Recorder()
    fake_vllm(monkeypatch, recorder)
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (adapter / "knowlm.json").write_text(json.dumps({"template": "chatml"}))
    out = tmp_path / "pred.jsonl"
    result = cli("extract", "-m", tiny_model_dir, "--adapter", adapter, "--task", "re", "--schema", json.dumps(SCHEMA, ensure_ascii=False),
                 "-i", write_texts(tmp_path), "-o", out, "--max-new-tokens", "48", "--split-num", "0", "--backend", "vllm")
    assert result.exit_code == 0, result.stderr
    assert recorder.engines[0]["enable_lora"] is True and recorder.engines[0]["max_loras"] == 1
    (prompts, params, _, lora), = recorder.calls
    assert prompts == expected_prompts("chatml", [SCHEMA])  # the adapter's template
    assert params == sys.modules["vllm"].SamplingParams(**sampling_kwargs(stop=list(get("chatml").stop)))  # one for all prompts
    assert (lora.lora_name, lora.lora_int_id, lora.lora_path) == ("adapter", 1, str(adapter))
    assert "template 'chatml'" in result.stdout


def test_vllm_backend_errors_are_one_line(cli, tiny_model_dir, tmp_path, monkeypatch):
    args = ["extract", "-m", tiny_model_dir, "--task", "ner", "--schema", "person", "-i", write_texts(tmp_path), "-o", tmp_path / "o.jsonl"]
    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed
    result = cli(*args, "--backend", "vllm")
    assert (result.exit_code, result.stderr) == (2, "error: --backend vllm needs vLLM and a CUDA GPU: pip install 'knowlm[gpu]' (or use --backend hf)\n")
    fake_vllm(monkeypatch, Recorder())
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = cli(*args, "--backend", "vllm")
    assert (result.exit_code, result.stderr) == (2, "error: --backend vllm needs a CUDA GPU and none is visible; use --backend hf on this machine\n")
    result = cli(*args, "--backend", "vllm", "--compile")
    assert (result.exit_code, result.stderr) == (2, "error: --backend vllm does not take --compile (vLLM runs on CUDA and compiles on its own)\n")
    result = cli(*args, "--backend", "tgi")
    assert (result.exit_code, result.stderr) == (2, "error: unknown backend 'tgi'; choose one of: hf, vllm\n")


def test_vllm_generator_refuses_python_logits_processors(tiny_model_dir, monkeypatch):
    from knowlm.errors import KnowlmError
    from knowlm.infer.vllm_generator import VllmGenerator

    recorder = Recorder()
    fake_vllm(monkeypatch, recorder)
    generator = VllmGenerator.from_pretrained(str(tiny_model_dir))
    with pytest.raises(KnowlmError, match="^the vllm backend constrains output by JSON schema only"):
        generator.generate(["x"], logits_processor=lambda indices: [])
    assert recorder.calls == [] and generator.generate([]) == []


def test_vllm_compiles_the_same_grammar_as_constrained_decoding():
    """vLLM's xgrammar backend with disable_any_whitespace compiles ``from_json_schema(schema, any_whitespace=False)``;
    knowlm's GrammarCache passes separators and strict mode explicitly: the grammars must be the same."""
    xgr = pytest.importorskip("xgrammar")
    from knowlm.ie.constrained import SEPARATORS

    for task, schema in (("re", SCHEMA), ("ner", ["人物", "地点"]), ("ee", [{"event_type": "地震", "arguments": ["震级", "时间"]}])):
        text = json.dumps(json_schema(task, schema), ensure_ascii=False)
        ours = xgr.Grammar.from_json_schema(text, any_whitespace=False, separators=SEPARATORS, strict_mode=True)
        assert str(ours) == str(xgr.Grammar.from_json_schema(text, any_whitespace=False))

