"""The README's worked example runs (with fewer steps)."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _block(heading):
    text = README.read_text()
    section = text[text.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_worked_example_runs(capsys):
    code = _block("## Worked example").replace("range(2000)", "range(20)")
    exec(compile(code, "README-worked-example", "exec"), {})
    out = capsys.readouterr().out
    assert "M1:" in out and "-ELBO:" in out and "IS  log p(x):" in out and "AIS log p(x):" in out


def test_quickstart_has_exactly_two_commands():
    block = re.search(r"## Quickstart\n\n```bash\n(.*?)```", README.read_text(), re.S).group(1)
    assert block.strip().splitlines() == ["make compare", "make test"]
