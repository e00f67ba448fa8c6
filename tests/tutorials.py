"""Runs the python blocks of a markdown tutorial as one script with smoke settings."""

import pathlib
import re

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


def tutorial_script(name, smoke_settings, min_blocks=1):
    """The python blocks of ``docs/<name>`` as one script, each block at its own line number in
    the markdown file (so tracebacks point into the tutorial), with each ``NAME = ...`` line of
    ``smoke_settings`` replaced by its smoke value (exactly one such line each)."""
    path = DOCS / name
    text = path.read_text()
    code, blocks = "", 0
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        first_line = text.count("\n", 0, match.start(1))  # 0-based line of the block's code
        code += "\n" * (first_line - code.count("\n")) + match.group(1)
        blocks += 1
    assert blocks >= min_blocks, f"the python blocks of {name} were not found"
    for key, value in smoke_settings.items():
        code, count = re.subn(rf"^{key} = .*$", f"{key} = {value}", code, flags=re.M)
        assert count == 1, f"expected exactly one '{key} = ...' line in {name}"
    return compile(code, str(path), "exec")
