"""README.zh.md is kept in step with README.md: the same sections, the same commands, the same code."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _headings(text: str) -> list[int]:
    """Heading levels in order, code blocks skipped (their `#` lines are comments)."""
    levels, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"^(#+) ", line)):
            levels.append(len(match.group(1)))
    return levels


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n.*?\n```", text, flags=re.S)


def _table_commands(text: str) -> list[str]:
    """The first cell of each row of the command table (`knowlm ...` in backticks)."""
    return re.findall(r"^\| (`knowlm [^|]*?(?:\\\|[^|]*?)*`) \|", text, flags=re.M)


def test_chinese_readme_has_the_same_sections_commands_and_code():
    en = (REPO / "README.md").read_text(encoding="utf-8")
    zh = (REPO / "README.zh.md").read_text(encoding="utf-8")
    assert _headings(zh) == _headings(en), "README.md's sections changed: translate them into README.zh.md"
    assert _code_blocks(zh) == _code_blocks(en), "a code block differs between README.md and README.zh.md"
    assert _table_commands(zh) == _table_commands(en) and _table_commands(en), "the command tables differ"
    assert "README.zh.md" in en and "README.md" in zh
