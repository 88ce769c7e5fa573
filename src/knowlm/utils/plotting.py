"""Matplotlib set-up shared by every report picture: headless backend, a font that can draw
Chinese labels (relation names, entity types), and labelled bar charts.

The CJK font is found even when matplotlib's font cache was built before the font was installed
(the cache is not rebuilt by itself): the system's font files are then searched and registered.
Without any CJK font, one notice is given instead of a warning per missing glyph.
"""

from __future__ import annotations

import sys
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Sequence

CJK_FONTS = ("WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC",
             "Source Han Sans SC", "Source Han Sans CN", "SimHei", "Microsoft YaHei", "PingFang SC", "Droid Sans Fallback")
# lower-case fragments of the file names those fonts ship in
CJK_FILES = ("wqy-microhei", "wqy-zenhei", "notosanscjk", "notosanssc", "sourcehansans", "simhei", "msyh", "pingfang",
             "droidsansfallback")
NO_GLYPH = "Glyph .* missing from font"


def _installed() -> set[str]:
    from matplotlib import font_manager

    return {font.name for font in font_manager.fontManager.ttflist}


@lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """The name of a CJK-capable font matplotlib can use, registering system font files its cache missed."""
    from matplotlib import font_manager

    names = _installed()
    for name in CJK_FONTS:
        if name in names:
            return name
    for path in font_manager.findSystemFonts():
        flat = Path(path).name.lower().replace("-", "").replace("_", "")
        if any(fragment.replace("-", "") in flat for fragment in CJK_FILES):
            try:
                font_manager.fontManager.addfont(path)
            except (OSError, RuntimeError, ValueError):  # unreadable font file: try the next
                continue
    names = _installed()
    return next((name for name in CJK_FONTS if name in names), None)


@lru_cache(maxsize=1)
def pyplot():
    """``matplotlib.pyplot`` with the Agg backend and a CJK-capable sans-serif font first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    font = cjk_font()
    plt.rcParams["font.sans-serif"] = [*([font] if font else []), "DejaVu Sans"]
    plt.rcParams["font.family"] = "sans-serif"
    plt.rcParams["axes.unicode_minus"] = False
    if font is None:
        print("note: no CJK font found; Chinese labels in charts render as boxes (install fonts-wqy-microhei)",
              file=sys.stderr)
        warnings.filterwarnings("ignore", message=NO_GLYPH)
    return plt


def labelled_bars(ax, names: Sequence[str], values: Sequence[float], *, horizontal: bool = False,
                  fmt: str = "{:.1f}", color: str = "#4477aa", limit: float | None = None) -> None:
    """Bars with their value written at the end, so that exact figures read off the picture and a
    zero bar is still seen (as a stub and a "0" label) rather than missing."""
    top = limit if limit is not None else max([*values, 0]) or 1.0
    stub = top * 0.004  # a hairline for zero values
    shown = [v if v else stub for v in values]
    positions = range(len(names))
    bars = (ax.barh if horizontal else ax.bar)(positions, shown, color=color)
    ax.bar_label(bars, labels=[fmt.format(v) for v in values], padding=2, fontsize=7)
    if horizontal:
        ax.set_yticks(list(positions), list(names), fontsize=8)
        ax.set_xlim(0, top * 1.12)
    else:
        ax.set_xticks(list(positions), list(names), rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, top * 1.12)
