"""Knowledge editing: ROME, MEMIT, AlphaEdit, constrained fine-tuning (FT-L/FT-M), GRACE and in-context
editing (IKE), with EasyEdit's reliability / generalisation / locality / portability metrics before
and after, per category, and lifelong (sequential) editing curves.

    from knowlm.edit import edit
    result = edit(model, tokenizer, [{"prompt": "The capital of Zorland is", "subject": "Zorland",
                                      "target_new": "Brill"}], method="rome")
    print(result.metrics["post"]); result.restore()
"""

from knowlm.edit.editor import MODES, EditResult, WeightGuard, edit, save_edited
from knowlm.edit.hparams import METHODS, load_hparams, preset_names
from knowlm.edit.requests import EditRequest, Probe, load_requests, make_requests


def demo_stage(workdir, model_dir, **kwargs):
    """Edit one fact in ``model_dir`` with ROME and return before/after answers and metrics."""
    from knowlm.edit.demo import demo_stage as _stage

    return _stage(workdir, model_dir, **kwargs)


__all__ = ["edit", "save_edited", "EditResult", "WeightGuard", "EditRequest", "Probe", "load_requests",
           "make_requests", "load_hparams", "preset_names", "METHODS", "MODES", "demo_stage"]
