"""Charts: the CJK font is found even past a stale matplotlib font cache; bars carry their values."""

import warnings

import pytest

from knowlm.utils import plotting


@pytest.fixture
def fresh_plotting(monkeypatch):
    plotting.cjk_font.cache_clear()
    plotting.pyplot.cache_clear()
    yield
    plotting.cjk_font.cache_clear()
    plotting.pyplot.cache_clear()


def test_cjk_font_found_when_the_cache_predates_it(fresh_plotting, monkeypatch):
    from matplotlib import font_manager

    system = [f for f in font_manager.findSystemFonts() if any(k in f.lower() for k in ("wqy", "notosanscjk", "sourcehan"))]
    if not system:
        pytest.skip("no CJK font installed on this machine (make system-deps installs one)")
    stale = [f for f in font_manager.fontManager.ttflist if f.name not in plotting.CJK_FONTS]
    monkeypatch.setattr(font_manager.fontManager, "ttflist", stale)  # as if cached before the font was installed
    assert plotting.cjk_font() in plotting.CJK_FONTS
    plt = plotting.pyplot()
    fig, ax = plt.subplots()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph would be a UserWarning
        ax.set_title("关系抽取 F1")
        fig.canvas.draw()
    plt.close(fig)


def test_bars_are_labelled_and_zero_bars_visible(fresh_plotting):
    plt = plotting.pyplot()
    fig, ax = plt.subplots()
    plotting.labelled_bars(ax, ["位于", "创办", "born in"], [0.0, 100.0, 37.5], limit=100)
    heights = [patch.get_height() for patch in ax.patches]
    labels = [text.get_text() for text in ax.texts]
    plt.close(fig)
    assert heights[0] > 0 and heights[1:] == [100.0, 37.5]
    assert labels == ["0.0", "100.0", "37.5"]
