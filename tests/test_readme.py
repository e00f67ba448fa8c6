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


def test_own_grouped_loss_example_trains_the_right_groups():
    import pyro
    import torch
    from pyro.infer import SVI
    from pyro.optim import Adam

    from pyro_vsm.datasets import LinearGaussian

    namespace = {}
    exec(compile(_block("### One loss core"), "README-grouped-loss", "exec"), namespace)
    loss = namespace["GuideThenModelELBO"]()
    lg = LinearGaussian(learnable=True)
    x = lg.sample_data(16)
    svi = SVI(lg.model, lg.guide, Adam({"lr": 0.01}), loss=loss)
    store = pyro.get_param_store()
    for phase in ["guide", "guide", "model"] * 2:
        assert loss.phase == phase
        svi.step(x)
    # one more guide step: the decoder does not move
    before = {k: v.detach().clone() for k, v in store.items()}
    svi.step(x)
    assert all(torch.equal(before[k], store[k]) for k in before if k.startswith("dec_"))
    assert not all(torch.equal(before[k], store[k]) for k in before if k.startswith("enc_"))


def test_every_registered_objective_is_listed_with_its_paper():
    from pyro_vsm.experiments import objective_names

    text = README.read_text()
    section = text[text.index("### Objectives of `pyro-vsm compare`") :]
    section = section[: section.index("\n## ")]
    rows = [line for line in section.splitlines() if line.startswith("| `") and "--" not in line]
    listed = {name.strip("` ") for row in rows for name in row.split("|")[1].split(",")}
    assert listed == set(objective_names())
    assert all(row.rstrip(" |").split("|")[-1].strip() for row in rows)  # a paper in every row
