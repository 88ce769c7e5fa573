"""The one prompt builder for extraction: training data, ``knowlm extract``, ``/extract`` and
the demo all call it, so a model is always asked exactly the way it was taught.

Two styles:

* ``json`` — IEPile/OneKE: the instruction is a JSON object ``{"instruction", "schema", "input"}``
  and the answer a JSON object keyed by every schema item in order (``[]`` when absent).
* ``knowlm`` — the KnowLM/ZhiXi free-text style: the schema is listed in the instruction, the
  text is the input, and the answer is one tuple per line: ``(实体,实体类型)``,
  ``(头实体,关系,尾实体)``, ``(触发词,事件类型,[(论元,角色), ...])``; for the KG2Instruction task
  shapes ``(触发词,事件类型)`` (EET) and ``(触发词,事件类型,角色#论元;角色#论元)`` (EEA).

Tasks beyond NER/RE/EE follow IEPile's answers: EET ``{事件类型: [触发词, ...]}``, EEA
``{事件类型: [{角色: 论元 | [论元, ...] | "NAN"}]}`` and SPO ``{谓词: [{"subject", "object"}]}``.

``build_prompt`` returns ``(instruction, input)``; wrap it with
``knowlm.models.templates.render(template, instruction, input)``.
"""

from __future__ import annotations

import json
from typing import Any

from knowlm.errors import KnowlmError
from knowlm.ie.records import is_na
from knowlm.ie.schema import EventType, Schema, SpoType, make_schema

STYLES = ("json", "knowlm")
WORDINGS = ("full", "compact")
NAN = "NAN"
NONE_ANSWER = {"zh": "无", "en": "None"}

# IEPile's instructions (first wording of each) plus paraphrases for variety in training data.
JSON_INSTRUCTIONS: dict[tuple[str, str], list[str]] = {
    ("ner", "zh"): [
        "你是专门进行实体抽取的专家。请从input中抽取出符合schema定义的实体，不存在的实体类型返回空列表。请按照JSON字符串的格式回答。",
        "请从input中找出属于schema所列类型的实体，没有的类型返回空列表，以JSON字符串回答。",
        "作为命名实体识别专家，请根据schema中的实体类型抽取input中的实体，不存在则返回空列表，答案用JSON字符串表示。",
    ],
    ("ner", "en"): [
        "You are an expert in named entity recognition. Please extract entities that match the schema definition from the input. Return an empty list if the entity type does not exist. Please respond in the format of a JSON string.",
        "Find the entities in the input that belong to the types listed in the schema; use an empty list for types that do not occur. Answer with a JSON string.",
        "As a named entity recognition expert, extract the entities of each schema type from the input (an empty list when there are none) and reply in JSON.",
    ],
    ("re", "zh"): [
        "你是专门进行关系抽取的专家。请从input中抽取出符合schema定义的关系三元组，不存在的关系返回空列表。请按照JSON字符串的格式回答。",
        "请根据schema中的关系，从input中抽取主体和客体，不存在的关系返回空列表，以JSON字符串回答。",
        "作为关系抽取专家，请找出input中符合schema定义的所有关系三元组，没有的关系返回空列表，答案用JSON字符串表示。",
    ],
    ("re", "en"): [
        "You are an expert in relationship extraction. Please extract relationship triples that match the schema definition from the input. Return an empty list for relationships that do not exist. Please respond in the format of a JSON string.",
        "Extract the subject and object of every relation in the schema that the input expresses; use an empty list for relations that do not occur. Answer with a JSON string.",
        "As a relation extraction expert, find all relation triples in the input that fit the schema (an empty list when there are none) and reply in JSON.",
    ],
    ("ee", "zh"): [
        "你是专门进行事件提取的专家。请从input中抽取出符合schema定义的事件，不存在的事件返回空列表，不存在的论元返回NAN，如果论元存在多值请返回列表。请按照JSON字符串的格式回答。",
        "请根据schema中的事件类型和论元角色，从input中抽取事件及其触发词和论元，不存在的事件返回空列表，不存在的论元返回NAN，以JSON字符串回答。",
        "作为事件抽取专家，请找出input中符合schema定义的事件，没有的事件返回空列表，缺失的论元用NAN表示，答案用JSON字符串表示。",
    ],
    ("ee", "en"): [
        "You are an expert in event extraction. Please extract events from the input that conform to the schema definition. Return an empty list for events that do not exist, and return NAN for arguments that do not exist. If an argument has multiple values, please return a list. Respond in the format of a JSON string.",
        "Extract the events of the schema's event types from the input, with their triggers and arguments; use an empty list for events that do not occur and NAN for missing arguments. Answer with a JSON string.",
        "As an event extraction expert, find the events in the input that fit the schema (an empty list when there are none, NAN for missing arguments) and reply in JSON.",
    ],
}

# The task shapes added for OneKE-style tuning (IEPile's wordings first: instruction_mapper in
# IEPile's ie2instruction/convert/utils/instruction.py and its data/SPO test files).
JSON_INSTRUCTIONS.update({
    ("eet", "zh"): [
        "你是专门进行事件提取的专家。请从input中抽取出符合schema定义的事件类型及事件触发词，不存在的事件返回空列表。请按照JSON字符串的格式回答。",
        "请找出input中属于schema所列事件类型的事件触发词，没有的事件类型返回空列表，以JSON字符串回答。",
        "作为事件检测专家，请根据schema中的事件类型抽取input中的事件触发词，不存在则返回空列表，答案用JSON字符串表示。",
    ],
    ("eet", "en"): [
        "You are an expert in event extraction. Please extract event types and event trigger words from the input that conform to the schema definition. Return an empty list for non-existent events. Please respond in the format of a JSON string.",
        "Find the trigger words of the schema's event types in the input; use an empty list for event types that do not occur. Answer with a JSON string.",
        "As an event detection expert, list the triggers of each schema event type found in the input (an empty list when there are none) and reply in JSON.",
    ],
    ("eea", "zh"): [
        "你是专门进行事件论元提取的专家。请从input中抽取出符合schema定义的事件论元及论元角色，不存在的论元返回NAN或空字典，如果论元存在多值请返回列表。请按照JSON字符串的格式回答。",
        "已知input中发生了schema所列的事件，请抽取每个事件的论元，不存在的论元返回NAN，论元有多个值时返回列表，以JSON字符串回答。",
        "作为事件论元抽取专家，请根据schema中的事件类型和论元角色抽取input中的论元，缺失的论元用NAN表示，答案用JSON字符串表示。",
    ],
    ("eea", "en"): [
        "You are an expert in event argument extraction. Please extract event arguments and their roles from the input that conform to the schema definition, which already includes event trigger words. If an argument does not exist, return NAN or an empty dictionary. Please respond in the format of a JSON string.",
        "The input contains the events listed in the schema; extract the arguments of each event by role, NAN for missing arguments and a list for several values. Answer with a JSON string.",
        "As an event argument extraction expert, fill in the roles of each schema event from the input (NAN when an argument is missing) and reply in JSON.",
    ],
    ("spo", "zh"): [
        "你是专门进行SPO三元组抽取的专家。请从input中抽取出符合schema定义的spo关系三元组，不存在的关系返回空列表。请按照JSON字符串的格式回答。",
        "你是专门进行关系抽取的专家。请从input中抽取出符合schema定义的关系三元组，不存在的关系返回空列表。请按照JSON字符串的格式回答。",
        "请根据schema中的主体类型、谓词和客体类型，从input中抽取主体和客体，不存在的关系返回空列表，以JSON字符串回答。",
    ],
    ("spo", "en"): [
        "You are an expert in relationship extraction. Please extract relationship triples that match the schema definition from the input. Return an empty list for relationships that do not exist. Please respond in the format of a JSON string.",
        "Extract the subject and object of every schema predicate the input expresses, respecting the subject and object types; use an empty list for predicates that do not occur. Answer with a JSON string.",
        "As an SPO triple extraction expert, find the triples in the input whose subject and object have the schema's types (an empty list when there are none) and reply in JSON.",
    ],
})

# KnowLM/ZhiXi free-text instructions; {schema} is the list of types/relations/events.
KNOWLM_INSTRUCTIONS: dict[tuple[str, str], list[str]] = {
    ("ner", "zh"): [
        "已知候选的实体类型列表：{schema}，请你根据实体类型列表，从以下输入中抽取出可能存在的实体。请按照 (实体,实体类型) 的格式回答，每行一个。",
        "请从下面的文本中找出属于以下类型的实体：{schema}。以 (实体,实体类型) 的格式回答，每行一个。",
        "命名实体识别：实体类型为{schema}。请抽取文本中的实体，输出格式为 (实体,实体类型)，每行一个。",
    ],
    ("ner", "en"): [
        "Given the candidate entity types {schema}, extract the entities in the following input that belong to these types. Answer in the format (entity,entity type), one per line.",
        "Find the entities of the types {schema} in the text below. Reply with one (entity,entity type) per line.",
        "Named entity recognition with types {schema}: list every entity in the input as (entity,entity type), one per line.",
    ],
    ("re", "zh"): [
        "已知候选的关系列表：{schema}，请你根据关系列表，从以下输入中抽取出可能存在的头实体与尾实体，并给出对应的关系三元组。请按照 (头实体,关系,尾实体) 的格式回答，每行一个。",
        "请从下面的文本中抽取关系三元组，关系限定为：{schema}。以 (头实体,关系,尾实体) 的格式回答，每行一个。",
        "关系抽取：候选关系为{schema}。请输出文本中存在的三元组，格式为 (头实体,关系,尾实体)，每行一个。",
    ],
    ("re", "en"): [
        "Given the candidate relations {schema}, extract the head and tail entities that may hold these relations in the following input and give the triples. Answer in the format (subject,relation,object), one per line.",
        "Extract relation triples from the text below; the relation must be one of {schema}. Reply with one (subject,relation,object) per line.",
        "Relation extraction with relations {schema}: list every triple in the input as (subject,relation,object), one per line.",
    ],
    ("ee", "zh"): [
        "已知候选的事件类型及论元角色：{schema}，请你从以下输入中抽取事件。请按照 (触发词,事件类型,[(论元,角色), ...]) 的格式回答，每行一个事件。",
        "请从下面的文本中抽取事件，事件类型和论元角色为：{schema}。以 (触发词,事件类型,[(论元,角色), ...]) 的格式回答，每行一个。",
        "事件抽取：候选事件为{schema}。请输出文本中的事件，格式为 (触发词,事件类型,[(论元,角色), ...])，每行一个。",
    ],
    ("ee", "en"): [
        "Given the candidate event types and argument roles {schema}, extract the events in the following input. Answer in the format (trigger,event type,[(argument,role), ...]), one event per line.",
        "Extract events from the text below; event types and roles: {schema}. Reply with one (trigger,event type,[(argument,role), ...]) per line.",
        "Event extraction with events {schema}: list each event in the input as (trigger,event type,[(argument,role), ...]), one per line.",
    ],
}

# Compact wordings: one short sentence and no type descriptions. A small model spends its few
# parameters and its context on the text instead of on boilerplate it must read in every prompt;
# the answer format is unchanged, so parsing, scoring and constrained decoding are the same.
COMPACT_INSTRUCTIONS: dict[tuple[str, str, str], str] = {
    ("json", "ner", "zh"): "抽取实体。",
    ("json", "ner", "en"): "Extract entities.",
    ("json", "re", "zh"): "抽取关系。",
    ("json", "re", "en"): "Extract relations.",
    ("json", "ee", "zh"): "抽取事件。",
    ("json", "ee", "en"): "Extract events.",
    ("knowlm", "ner", "zh"): "实体类型：{schema}。每行一个 (实体,实体类型)。",
    ("knowlm", "ner", "en"): "Entity types: {schema}. One (entity,entity type) per line.",
    ("knowlm", "re", "zh"): "关系：{schema}。每行一个 (头实体,关系,尾实体)。",
    ("knowlm", "re", "en"): "Relations: {schema}. One (subject,relation,object) per line.",
    ("knowlm", "ee", "zh"): "事件：{schema}。每行一个 (触发词,事件类型,[(论元,角色), ...])。",
    ("knowlm", "ee", "en"): "Events: {schema}. One (trigger,event type,[(argument,role), ...]) per line.",
}

KNOWLM_INSTRUCTIONS.update({  # KG2Instruction's EET/EEA answer formats
    ("eet", "zh"): [
        "已知候选的事件类型列表：{schema}，请你根据事件类型列表，从以下输入中抽取出可能存在的事件触发词。请按照 (事件触发词,事件类型) 的格式回答，每行一个。",
        "请从下面的文本中找出属于以下事件类型的事件：{schema}。以 (事件触发词,事件类型) 的格式回答，每行一个。",
        "事件检测：事件类型为{schema}。请输出文本中的事件，格式为 (事件触发词,事件类型)，每行一个。",
    ],
    ("eet", "en"): [
        "Given the candidate event types {schema}, find the event triggers in the following input. Answer in the format (trigger,event type), one per line.",
        "Find the events of the types {schema} in the text below. Reply with one (trigger,event type) per line.",
        "Event detection with types {schema}: list every event in the input as (trigger,event type), one per line.",
    ],
    ("eea", "zh"): [
        "已知事件类型及论元角色：{schema}，请你从以下输入中抽取这些事件的论元。请按照 (事件触发词,事件类型,论元角色#事件论元;论元角色#事件论元) 的格式回答，每行一个事件，不存在的论元输出NAN。",
        "下面的文本中发生了以下事件：{schema}。请抽取事件论元，以 (事件触发词,事件类型,论元角色#事件论元;论元角色#事件论元) 的格式回答，每行一个。",
        "事件论元抽取：事件为{schema}。输出格式为 (事件触发词,事件类型,论元角色#事件论元;...)，每行一个事件。",
    ],
    ("eea", "en"): [
        "Given the events and argument roles {schema}, extract their arguments from the following input. Answer in the format (trigger,event type,role#argument;role#argument), one event per line, NAN when an argument is missing.",
        "The text below contains these events: {schema}. Extract their arguments as (trigger,event type,role#argument;role#argument), one per line.",
        "Event argument extraction for {schema}: list each event as (trigger,event type,role#argument;...), one per line.",
    ],
    ("spo", "zh"): [
        "已知候选的关系及其主客体类型：{schema}，请你从以下输入中抽取出符合类型的头实体与尾实体。请按照 (头实体,关系,尾实体) 的格式回答，每行一个。",
        "请从下面的文本中抽取关系三元组，关系及主客体类型限定为：{schema}。以 (头实体,关系,尾实体) 的格式回答，每行一个。",
        "SPO抽取：候选关系为{schema}。请输出文本中存在的三元组，格式为 (头实体,关系,尾实体)，每行一个。",
    ],
    ("spo", "en"): [
        "Given the candidate relations with their subject and object types {schema}, extract the triples of the following input whose entities have these types. Answer in the format (subject,relation,object), one per line.",
        "Extract relation triples from the text below; relations and entity types: {schema}. Reply with one (subject,relation,object) per line.",
        "SPO extraction with {schema}: list every triple in the input as (subject,relation,object), one per line.",
    ],
})

DESCRIPTION_HEADER = {"zh": "类型说明：", "en": "Type descriptions: "}


def check_style(style: str) -> str:
    if style not in STYLES:
        raise KnowlmError(f"unknown prompt style {style!r}; choose one of: {', '.join(STYLES)}")
    return style


def check_wording(wording: str) -> str:
    if wording not in WORDINGS:
        raise KnowlmError(f"unknown prompt wording {wording!r}; choose one of: {', '.join(WORDINGS)}")
    return wording


def _lang(lang: str | None, text: str) -> str:
    from knowlm.ie.records import detect_lang

    if lang in ("zh", "en"):
        return lang
    return detect_lang(text)


def _descriptions(schema: Schema, lang: str) -> str:
    parts = [f"{name}: {schema.descriptions[name]}" for name in schema.names() if name in schema.descriptions]
    return DESCRIPTION_HEADER[lang] + ("；" if lang == "zh" else "; ").join(parts) if parts else ""


def _schema_listing(schema: Schema, lang: str) -> str:
    sep = "，" if lang == "zh" else ", "
    if schema.task in ("ee", "eea"):
        return "; ".join(f"{e.name}({sep.join(e.roles)})" for e in schema.items)
    if schema.task == "spo":
        return "; ".join(f"{s.predicate}({s.subject_type}{sep}{s.object_type})" for s in schema.items)
    return json.dumps(schema.names(), ensure_ascii=False)


def build_prompt(
    task: str, text: str, schema: Any, style: str = "json", lang: str | None = "zh", variant: int = 0,
    wording: str = "full",
) -> tuple[str, str]:
    """``(instruction, input)`` asking for ``schema`` (one batch) in ``text``.

    ``wording``: ``full`` (IEPile/KnowLM instructions, ``variant`` picks a paraphrase, with type
    descriptions) or ``compact`` (one short sentence, no descriptions or examples, for small models).
    """
    schema = make_schema(task, schema)
    style = check_style(style)
    lang = _lang(lang, text)
    if check_wording(wording) == "compact":
        instruction = COMPACT_INSTRUCTIONS.get((style, schema.task, lang))
        if instruction is None:
            raise KnowlmError(f"no compact wording for task {schema.task!r}; use --wording full")
        if style == "json":
            return json.dumps({"instruction": instruction, "schema": schema.to_json(), "input": text}, ensure_ascii=False), ""
        return instruction.format(schema=_schema_listing(schema, lang)), text
    desc = _descriptions(schema, lang)
    if style == "json":
        wordings = JSON_INSTRUCTIONS[(schema.task, lang)]
        instruction = wordings[variant % len(wordings)] + (("\n" if lang == "en" else "") + desc if desc else "")
        prompt: dict[str, Any] = {"instruction": instruction, "schema": schema.to_json()}
        if schema.examples:
            prompt["example"] = schema.examples
        prompt["input"] = text
        return json.dumps(prompt, ensure_ascii=False), ""
    wordings = KNOWLM_INSTRUCTIONS[(schema.task, lang)]
    instruction = wordings[variant % len(wordings)].format(schema=_schema_listing(schema, lang))
    if desc:
        instruction += "\n" + desc
    for example in schema.examples:
        instruction += f"\n{'例如' if lang == 'zh' else 'Example'}: {example.get('input', '')} -> {example.get('output', '')}"
    return instruction, text


def _group(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _spo_matches(rel: dict, item: SpoType) -> bool:
    """A gold relation answers an SPO item when the predicate matches and its types (when known) do."""
    if rel.get("relation") != item.predicate:
        return False
    head_type, tail_type = rel.get("head_type"), rel.get("tail_type")
    return (not head_type or head_type == item.subject_type) and (not tail_type or tail_type == item.object_type)


def _event_arguments(event: dict, roles: tuple[str, ...]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for role in roles:
        values = _group([a["text"] for a in event.get("arguments", []) if a.get("role") == role])
        args[role] = NAN if not values else values[0] if len(values) == 1 else values
    return args


def gold_json(task: str, record: dict, schema: Any) -> dict:
    """The answer object for ``record`` restricted to ``schema``: every item, in order, ``[]`` when absent."""
    schema = make_schema(task, schema)
    answer: dict[str, Any] = {}
    if schema.task == "spo":
        for item in schema.items:
            pairs = answer.setdefault(item.predicate, [])
            for r in record.get("relations", []):
                pair = {"subject": r["head"], "object": r["tail"]}
                if _spo_matches(r, item) and pair not in pairs:
                    pairs.append(pair)
    elif schema.task == "eet":
        for name in schema.names():
            answer[name] = _group([e["trigger"] for e in record.get("events", []) if e.get("type") == name and e.get("trigger")])
    elif schema.task == "eea":  # IEPile's EEAConverter: events without any argument are left out
        for item in schema.items:
            events = []
            for e in record.get("events", []):
                if e.get("type") == item.name:
                    args = _event_arguments(e, item.roles)
                    if any(v != NAN for v in args.values()) and args not in events:
                        events.append(args)
            answer[item.name] = events
    elif schema.task == "ner":
        for name in schema.names():
            answer[name] = _group([e["text"] for e in record.get("entities", []) if e.get("type") == name])
    elif schema.task == "re":
        for name in schema.names():
            pairs = []
            for r in record.get("relations", []):
                if r.get("relation") == name and not is_na(name):
                    pair = {"subject": r["head"], "object": r["tail"]}
                    if pair not in pairs:
                        pairs.append(pair)
            answer[name] = pairs
    else:
        for item in schema.items:
            events = []
            for e in record.get("events", []):
                if e.get("type") != item.name:
                    continue
                event = {"trigger": e["trigger"], "arguments": _event_arguments(e, item.roles)}
                if event not in events:
                    events.append(event)
            answer[item.name] = events
    return answer


def gold_output(task: str, record: dict, schema: Any, style: str = "json", lang: str | None = None) -> str:
    """The target answer text for a gold IE record, restricted to the schema batch."""
    schema = make_schema(task, schema)
    style = check_style(style)
    answer = gold_json(task, record, schema)
    if style == "json":
        return json.dumps(answer, ensure_ascii=False)
    lang = _lang(lang or record.get("lang"), record.get("text", ""))
    if schema.task == "eea":
        lines = _eea_lines(record, schema)
        return "\n".join(lines) if lines else NONE_ANSWER[lang]
    lines: list[str] = []
    for name, values in answer.items():
        for value in values:
            if schema.task == "ner":
                lines.append(f"({value},{name})")
            elif schema.task in ("re", "spo"):
                lines.append(f"({value['subject']},{name},{value['object']})")
            elif schema.task == "eet":
                lines.append(f"({value},{name})")
            else:
                pairs = []
                for role, arg in value["arguments"].items():
                    for text in arg if isinstance(arg, list) else [arg]:
                        if text != NAN:
                            pairs.append(f"({text},{role})")
                lines.append(f"({value['trigger']},{name},[{','.join(pairs)}])")
    return "\n".join(lines) if lines else NONE_ANSWER[lang]


def _eea_lines(record: dict, schema: Schema) -> list[str]:
    """KG2Instruction's EEA answer: ``(触发词,事件类型,角色#论元;角色#论元)`` per event with an argument."""
    lines: list[str] = []
    for item in schema.items:
        for e in record.get("events", []):
            if e.get("type") != item.name:
                continue
            pairs = [f"{a['role']}#{a['text']}" for a in e.get("arguments", []) if a.get("role") in item.roles]
            line = f"({e.get('trigger') or NAN},{item.name},{';'.join(dict.fromkeys(pairs))})"
            if pairs and line not in lines:
                lines.append(line)
    return lines


__all__ = ["build_prompt", "gold_output", "gold_json", "STYLES", "WORDINGS", "EventType"]
