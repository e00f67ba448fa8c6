"""Helpers of the tests."""

import re

import torch


def repeated_mean(fn, repeats):
    """Mean and standard error of ``repeats`` independent evaluations of ``fn()``."""
    vals = torch.tensor([float(fn()) for _ in range(repeats)], dtype=torch.float64)
    return vals.mean().item(), (vals.std() / repeats**0.5).item()


def markdown_script(path, settings, min_blocks):
    """The python blocks of a markdown file as one script, each block at its own line number in
    the file (so tracebacks point into it), with each ``NAME = ...`` line of ``settings``
    replaced by ``NAME = value`` (exactly one such line must exist per name)."""
    text = path.read_text()
    code, blocks = "", 0
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        first_line = text.count("\n", 0, match.start(1))  # 0-based line of the block's code
        code += "\n" * (first_line - code.count("\n")) + match.group(1)
        blocks += 1
    assert blocks >= min_blocks, f"the python blocks of {path.name} were not found"
    for name, value in settings.items():
        code, count = re.subn(rf"^{name} = .*$", f"{name} = {value}", code, flags=re.M)
        assert count == 1, f"expected exactly one '{name} = ...' line in {path.name}"
    return code
