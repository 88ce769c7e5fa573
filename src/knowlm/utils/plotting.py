"""Matplotlib set-up shared by every report picture: headless backend and a font that can
draw Chinese labels (relation names, entity types) when one is installed."""

from __future__ import annotations

from functools import lru_cache

CJK_FONTS = ("WenQuanYi Micro Hei", "Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "SimHei")


@lru_cache(maxsize=1)
def pyplot():
    """``matplotlib.pyplot`` with the Agg backend and a CJK-capable sans-serif font first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    available = [name for name in CJK_FONTS if name in installed]
    plt.rcParams["font.sans-serif"] = [*available, "DejaVu Sans"]
    plt.rcParams["font.family"] = "sans-serif"
    plt.rcParams["axes.unicode_minus"] = False
    return plt
