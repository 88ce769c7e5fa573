"""What ``knowlm env`` reports: the versions and devices a bug report needs (like ``llamafactory-cli env``).

Read from package metadata, so an optional extra that is not installed costs nothing and a broken
one does not stop the report.
"""

from __future__ import annotations

import importlib.metadata as metadata
import platform
import sys

import knowlm

CORE = ("torch", "transformers", "peft", "accelerate", "tokenizers", "safetensors", "sentencepiece", "numpy")

# extra name in pyproject.toml -> the distributions that make it work
EXTRAS = {
    "serve": ("fastapi", "uvicorn", "gradio"),
    "export": ("gguf",),
    "constrained": ("xgrammar",),
    "llama-cpp": ("llama-cpp-python",),
    "gpu": ("vllm", "deepspeed", "bitsandbytes"),
    "mindspore": ("mindspore",),
}


def version_of(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _devices() -> dict:
    try:
        import torch
    except Exception as exc:  # a broken torch is exactly what a bug report must show
        return {"error": f"torch does not import: {exc}"}
    info: dict = {"cuda_available": torch.cuda.is_available(), "cuda_version": torch.version.cuda, "gpus": []}
    if info["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            info["gpus"].append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)})
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    info["mps_available"] = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    info["cpu_threads"] = torch.get_num_threads()
    return info


def _cjk_font() -> str | None:
    try:
        from knowlm.utils.plotting import cjk_font

        return cjk_font()
    except Exception:
        return None


def collect() -> dict:
    """Everything ``knowlm env`` prints, as a dict (``--json``)."""
    return {
        "knowlm": knowlm.__version__,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "packages": {name: version_of(name) for name in CORE},
        "devices": _devices(),
        "extras": {extra: {name: version_of(name) for name in names} for extra, names in EXTRAS.items()},
        "cjk_font": _cjk_font(),
    }


def lines(info: dict) -> list[str]:
    """The report as ``- key: value`` lines, ready to paste into an issue."""
    out = [
        f"- knowlm version: {info['knowlm']}",
        f"- Platform: {info['platform']}",
        f"- Python version: {info['python']}",
    ]
    out += [f"- {name} version: {version or 'not installed'}" for name, version in info["packages"].items()]
    dev = info["devices"]
    if "error" in dev:
        out.append(f"- Devices: {dev['error']}")
    else:
        out.append(f"- CUDA available: {dev['cuda_available']} (torch built with CUDA {dev['cuda_version'] or 'none'})")
        for i, gpu in enumerate(dev["gpus"]):
            out.append(f"- GPU {i}: {gpu['name']} ({gpu['memory_gib']} GiB)")
        if dev.get("mps_available"):
            out.append("- Apple MPS available: True")
        out.append(f"- CPU threads (torch): {dev['cpu_threads']}")
    for extra, packages in info["extras"].items():
        parts = ", ".join(f"{name} {version or 'missing'}" for name, version in packages.items())
        installed = "installed" if all(packages.values()) else "partly installed" if any(packages.values()) else "not installed"
        out.append(f"- extra [{extra}]: {installed} ({parts})")
    out.append(f"- CJK font for charts: {info['cjk_font'] or 'none (Chinese labels would render as boxes; install fonts-wqy-microhei)'}")
    return out
