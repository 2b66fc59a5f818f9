"""How counts and scores read, the same in the app, the CLI and the report."""

from __future__ import annotations

import re
from typing import Protocol

IRREGULAR_PLURALS = {"class": "classes"}


class Interval(Protocol):
    value: float
    low: float
    high: float


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``count`` and the noun in the right number: "1 image", "2 images", "1,234 files"."""
    if count == 1:
        return f"1 {noun}"
    return f"{count:,} {many or IRREGULAR_PLURALS.get(noun, noun + 's')}"


def percent(value: float) -> str:
    """A share or an accuracy: "67.4%", "100.0%"."""
    return f"{value:.1%}"


def interval(estimate: Interval) -> str:
    """The 95% interval of an estimate: "95% CI 59.1% to 74.9%"."""
    return f"95% CI {percent(estimate.low)} to {percent(estimate.high)}"


def percent_with_interval(estimate: Interval) -> str:
    """An accuracy with its interval: "67.4% (95% CI 59.1% to 74.9%)"."""
    return f"{percent(estimate.value)} ({interval(estimate)})"


BREAK_AFTER = "_-. /"
PLAIN = " .,:;'\"()=%/?@-"  # read as themselves in Markdown (but at the start of a line)
LINE_START_MARKUP = re.compile(r"[-+#>]|\d+[.)](\s|$)")  # a list, a heading or a quote


def caption_text(text: str, *, breakable: bool = False) -> str:
    """``text`` (a file or class name, from the user's files) for a Markdown caption that allows
    HTML: every character that Markdown or HTML could read as markup (``*_[]<>&$`` and the
    like, a list or heading marker at the start) is written as a character reference, so it
    shows as typed. ``breakable`` adds a line-break opportunity (``<wbr>``, nothing when
    copied) after each ``_``, ``-``, ``.``, ``/`` and space, so that a long file name in a
    narrow column wraps between its parts rather than inside one."""
    out = []
    for position, char in enumerate(text):
        markup = not (char.isalnum() or char in PLAIN)
        if position == 0 and LINE_START_MARKUP.match(text):
            markup = True
        out.append(f"&#{ord(char)};" if markup else char)
        if breakable and char in BREAK_AFTER:
            out.append("<wbr>")
    return "".join(out)


def file_name_caption(path: str) -> str:
    """The file name of ``path`` (its last part) as ``caption_text(..., breakable=True)``."""
    return caption_text(path.replace("\\", "/").rsplit("/", 1)[-1], breakable=True)
