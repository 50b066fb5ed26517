"""A generated section of a Markdown file: the lines between a begin and an end marker, replaced on every run
(``scripts/quantize_zoo.py`` and ``scripts/train_live.py`` write theirs into docs/zoo.md)."""
from __future__ import annotations

import os
from typing import List


def replace_block(path: str, begin: str, end: str, lines: List[str]) -> None:
    """Put ``lines`` (the markers included) where ``begin`` … ``end`` stand in ``path``, or append them; atomically."""
    from edgeconf.atomic import write_text

    text = ""
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
    block = "\n".join(lines) + "\n"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    write_text(path, text)
