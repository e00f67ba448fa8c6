r"""The comparison table (text and markdown) and the notes that explain it."""

from .. import reporting
from .registry import get_objective

__all__ = ["COLUMNS", "cell", "format_markdown", "format_table", "notes", "papers_markdown"]

#: (report key, column title, digits); ``None`` digits: an integer or a share in percent
COLUMNS = (
    ("test_nll", "NLL (IS)", 3),
    ("khat_above_0.7", "k>0.7", "%"),
    ("test_nll_ais", "NLL (AIS)", 3),
    ("test_score_matching", "SM loss", 3),
    ("mmd_to_test", "MMD²", 4),
    ("smooth_knn", "S-kNN", 2),
    ("reconstruction_mse", "recon MSE", 4),
    ("marginal_kl", "marg. KL", 3),
    ("active_units", "active", "int"),
    ("train_seconds", "train s", 1),
)


def cell(row, key, digits):
    r"""One table cell: the formatted value, ``n/a`` (does not apply), ``diverged``/``failed``
    (in the first column of such runs), ``err`` (failed or non-finite) or ``—`` (missing); a
    ``*`` marks values that rest on an estimated (optimistic) log Z.

    :param dict row: a report entry.
    :param str key: the metric.
    :param digits: digits after the point, ``"%"`` or ``"int"``.
    """
    status = row.get("status", "ok")
    if status != "ok" and key != "train_seconds":
        return status if key == COLUMNS[0][0] else "—"
    if key in row.get("not_applicable", {}):
        return "n/a"
    value = row.get(key)
    if value is None:
        return "err" if key in row.get("errors", {}) else "—"
    if digits == "%":
        text = f"{value:.0%}"
    elif digits == "int":
        text = f"{int(value)}/{row.get('latent_dim', '?')}"
    else:
        text = reporting.format_mean(value, digits=digits)
    return text + ("*" if key in row.get("optimistic", ()) else "")


def format_table(rows):
    r"""The comparison as aligned plain text (stdout).

    :param rows: report entries.
    """
    width = max([len("objective")] + [len(r["objective"]) for r in rows]) + 2
    header = f"{'objective':<{width}}" + "".join(f"{label:>11}" for _, label, _ in COLUMNS)
    lines = [header, "-" * len(header)]
    for r in rows:
        cells = "".join(f"{cell(r, k, d):>11}" for k, _, d in COLUMNS)
        lines.append(f"{r['objective']:<{width}}" + cells)
    return "\n".join(lines)


def format_markdown(rows):
    r"""The comparison as a markdown table.

    :param rows: report entries.
    """
    header = ["objective"] + [label for _, label, _ in COLUMNS]
    body = [[r["objective"]] + [cell(r, k, d) for k, _, d in COLUMNS] for r in rows]
    return reporting.markdown_table(header, body)


def papers_markdown(names):
    r"""A markdown table of objectives, what they train and their papers.

    :param names: registered objective names.
    """
    specs = [get_objective(n) for n in names]
    body = [[f"`{s.name}`", s.family, s.summary, s.paper] for s in specs]
    return reporting.markdown_table(["objective", "family", "trains", "paper"], body)


def notes(options, rows):
    r"""The text under the table: what each column is, with the evaluation settings.

    :param dict options: ``eval_samples``, ``ais_temperatures``, ``ais_points``.
    :param rows: report entries (for the footnotes that apply).
    """
    text = (
        "Per held-out point, lower is better: NLL by importance sampling with the guide as "
        f"proposal ({options['eval_samples']} samples; k>0.7: share of points whose Pareto "
        f"k-hat flags that estimate) and by AIS ({options['ais_temperatures']} temperatures, "
        f"8 chains, first {options['ais_points']} points; from the prior, or from the guide "
        "for energy priors); SM loss: Hyvarinen's score-matching loss of p(x); MMD²/S-kNN: "
        "model draws vs held-out data (unbiased MMD², RBF kernel; smooth k-NN statistic); "
        "recon MSE: decoded posterior mean; marg. KL: KL[q(z) || p(z)] of the aggregate "
        "posterior; active: latent units whose posterior mean varies over the held-out points "
        "(variance > 0.01). n/a: does not apply (reason in report.json)."
    )
    if any(r.get("optimistic") for r in rows):
        text += " *: rests on an AIS estimate of log Z (a lower bound), so it is optimistic."
    if any(r.get("log_z_method") == "exact" for r in rows):
        text += " Energy priors: exact log Z (GRBM, sum over hidden states)."
    return text
