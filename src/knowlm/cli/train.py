"""`knowlm train pretrain|sft`: thin wrappers over :mod:`knowlm.train`.

The options of every recipe are generated once from its config dataclass (field name ->
``--field-name``, help text and aliases from the field's metadata), so the recipes cannot drift
apart and a YAML key is always also a flag. Every flag defaults to "not given" so that a
``--config`` YAML (or shipped preset) can set it and an explicit flag still wins. ``--data``
takes several values: ``--data 0.7 zh 0.3 en``.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Callable, Optional

import typer

from knowlm.errors import KnowlmError

train_app = typer.Typer(help="Continued pretraining and instruction tuning.\n\n"
                        "Example: knowlm train sft --model demo-work/pretrain --data demo-work/kg2instruct/train.jsonl --output demo-work/examples/lora",
                        no_args_is_help=True)

EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
METHOD_FLAGS = {"lora": "LoRA adapter.", "qlora": "LoRA on a 4-bit NF4 base model (CUDA + bitsandbytes).",
                "full": "Train all weights."}


def _data_tokens(given: list[str] | None, extra: list[str], flag: str = "--data") -> list[str] | None:
    """``--data 0.7 A 0.3 B`` arrives as ``--data 0.7`` plus extra args ``A 0.3 B``."""
    for token in extra:
        if token.startswith("-") and not _is_number(token):
            raise KnowlmError(f"unknown option {token}; see --help")
    tokens = list(given or []) + list(extra)
    return tokens or None


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def resolve_method(given: Optional[str], shortcuts: dict[str, Optional[bool]]) -> Optional[str]:
    """``--method X`` or one of ``--lora/--qlora/--full``; two different choices are an error in every recipe."""
    chosen = [f"--{name}" for name, flag in shortcuts.items() if flag]
    if given is not None:
        chosen.append(f"--method {given}")
    names = {c.split()[-1].lstrip("-") for c in chosen}
    if len(names) > 1:
        raise KnowlmError(f"choose one of --lora, --qlora, --full (got {', '.join(chosen)})")
    return names.pop() if names else None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _option(f: dataclasses.Field, hint, default) -> tuple[object, object]:
    """(annotation, typer.Option) for one config field."""
    meta = f.metadata
    help_text = meta.get("help", "")
    if meta.get("choices"):
        help_text += f" ({'|'.join(meta['choices'])})"
    if default not in (None, "", []):
        help_text += f" (default: {default})"
    flags = [_flag(f.name), *meta.get("flags", ())]
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    inner = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    kwargs = {"help": help_text, "show_default": False, "rich_help_panel": meta.get("panel")}
    if inner is bool:
        flags[0] = f"{flags[0]}/--no-{flags[0][2:]}"
        return Optional[bool], typer.Option(None, *flags, **kwargs)
    if typing.get_origin(inner) is list:
        if f.name == "lora_target_modules":  # one comma-separated value
            return Optional[str], typer.Option(None, *flags, **kwargs)
        return Optional[list[str]], typer.Option(None, *flags, **kwargs)
    return Optional[inner], typer.Option(None, *flags, **kwargs)


def make_command(cls, run: Callable, name: str, doc: str, defaults: dict | None = None) -> None:
    """Register ``knowlm train NAME`` with one option per field of ``cls`` (``defaults``: this command's own)."""
    hints = typing.get_type_hints(cls)
    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    annotations: dict[str, object] = {"ctx": typer.Context, "return": None}

    def add(param: str, annotation, option) -> None:
        params.append(inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
        annotations[param] = annotation

    add("config", Optional[str], typer.Option(None, "--config", help="YAML file or shipped preset; flags win over it."))
    fields = [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]
    for f in fields:
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        annotation, option = _option(f, hints[f.name], (defaults or {}).get(f.name, default))
        add(f.name, annotation, option)
    for short, text in METHOD_FLAGS.items():
        add(f"method_{short}", Optional[bool], typer.Option(None, f"--{short}", help=f"{text} Same as --method {short}."))

    def command(ctx: typer.Context, **kwargs) -> None:
        from knowlm.train import build_config

        config_file = kwargs.pop("config")
        shortcuts = {short: kwargs.pop(f"method_{short}") for short in METHOD_FLAGS}
        kwargs["method"] = resolve_method(kwargs.get("method"), shortcuts)
        kwargs["data"] = _data_tokens(kwargs.get("data"), ctx.args)
        for key, value in (defaults or {}).items():
            if kwargs.get(key) is None:
                kwargs[key] = value
        summary = run(build_config(cls, config_file, kwargs))
        if _is_main():
            _report(summary)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = annotations
    command.__doc__ = doc
    command.__name__ = f"{name}_cmd"
    train_app.command(name, context_settings=EXTRA)(command)


def _report(summary: dict) -> None:
    from knowlm.cli._common import console

    if summary.get("stopped_early"):
        console.print(f"Stopped after step {summary['steps']} as asked (--stop-at-step); resume with --resume.")
        return
    data = summary.get("data", {})
    cut = ""
    if "truncated" in data:
        cut = (f" {data['truncated']} of {data['records']} examples were cut to --cutoff-len {data['cutoff_len']}"
               f" and {data['dropped_no_answer']} dropped (prompt alone too long).")
    if data.get("long_sequences"):
        what = (f"{data['truncated_tokens']:,} tokens were cut (--long-sequences truncate)" if data["truncated_tokens"]
                else f"they continued into {data['continued_examples']:,} further samples, nothing dropped")
        cut = f" {data['long_sequences']:,} sequences were longer than --seq-len {data['seq_len']}: {what}."
    eval_part = f", eval loss {summary['eval_loss']:.4f}" if summary.get("eval_loss") is not None else ""
    resumed = f" Resumed from {summary['resumed_from']}." if summary.get("resumed_from") else ""
    console.print(
        f"Trained {summary['kind']} ({summary['method']}, {summary['strategy']} x{summary['world_size']}, "
        f"{summary['precision']}) for {summary['steps']} steps on {summary['tokens']:,} tokens: final loss "
        f"{summary['final_loss']:.4f}{eval_part}; {summary['trainable_params']:,} of {summary['total_params']:,} "
        f"parameters trained.{cut}{resumed} Wrote {summary['output']} (metrics.jsonl, loss.png, knowlm.json)."
    )


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _pretrain(cfg):
    from knowlm.train import pretrain

    return pretrain(cfg)


def _sft(cfg):
    from knowlm.train import sft

    return sft(cfg)


def _preference(cfg):
    from knowlm.train.pref import preference

    return preference(cfg)


def _register() -> None:
    from knowlm.train.config import PreferenceConfig, PretrainConfig, SFTConfig

    make_command(PretrainConfig, _pretrain, "pretrain",
                 "Continue pretraining a causal LM on indexed datasets (from `knowlm data prepare`).\n\n"
                 "Example: knowlm train pretrain --model demo-work/pretrain --data demo-work/corpus/texts --output demo-work/examples/pretrain --seq-len 256 --max-steps 10\n\n"
                 "Your corpora: knowlm train pretrain --model ./llama-7b-hf --data 0.7 corpus/zh 0.3 corpus/en --output out --max-steps 100")
    make_command(SFTConfig, _sft, "sft",
                 "Instruction-tune a model on alpaca-style records (LoRA by default).\n\n"
                 "Example: knowlm train sft --model demo-work/pretrain --data demo-work/kg2instruct/train.jsonl --output demo-work/examples/lora --max-steps 10\n\n"
                 "Your data: knowlm train sft --model ./llama-7b-hf --data ie_train.jsonl --output ie-lora --template alpaca --epochs 3")
    for objective, what in (("dpo", "DPO against the starting model"), ("orpo", "ORPO (SFT + odds ratio, no reference)")):
        make_command(PreferenceConfig, _preference, objective,
                     f"Preference-tune a model with {what} on JSONL pairs (instruction/prompt, chosen, rejected).\n\n"
                     f"Example (your preference pairs; the demo makes none): knowlm train {objective} --model ./zhixi-7b --data prefs.jsonl --output {objective}-lora --beta 0.1",
                     defaults={"objective": objective})


_register()


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
