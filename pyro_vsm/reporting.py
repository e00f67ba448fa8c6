r"""Summaries of repeated runs, shared by the examples, the benchmarks and the command line:
mean and spread over seeds (diverged runs excluded), grouping of result rows, markdown tables."""

import math
import statistics

__all__ = ["format_mean", "markdown_table", "mean_spread", "summarise"]


def mean_spread(values, spread="sem"):
    r"""``(mean, spread, n)`` over the finite values (a diverged run records NaN or inf).

    :param values: numbers.
    :param str spread: ``"sem"`` (standard error of the mean) or ``"sd"`` (standard deviation).
    :returns: the mean and spread are NaN when there is no finite value; the spread is NaN for
        a single value.
    """
    if spread not in ("sem", "sd"):
        raise ValueError(f"spread must be 'sem' or 'sd', got {spread!r}")
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan"), 0
    sd = statistics.stdev(finite) if len(finite) > 1 else float("nan")
    return (
        statistics.fmean(finite),
        sd / math.sqrt(len(finite)) if spread == "sem" else sd,
        len(finite),
    )


def summarise(rows, by, metrics, spread="sem", count="runs"):
    r"""One entry per group of ``rows``: the group's keys, the number of runs, and per metric its
    mean and spread (keys ``metric`` and ``metric_sem`` or ``metric_sd``), in first-seen order.

    :param rows: dictionaries, one per run.
    :param by: the keys that define a group (e.g. ``("dataset", "objective")``).
    :param metrics: the keys averaged over a group's runs (missing values count as diverged).
    :param str spread: ``"sem"`` or ``"sd"``.
    :param str count: the key of the number of runs.
    """
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row)
    out = []
    for key, group in groups.items():
        entry = dict(zip(by, key, strict=True))
        entry[count] = len(group)
        for metric in metrics:
            values = [r.get(metric, float("nan")) for r in group]
            entry[metric], entry[f"{metric}_{spread}"], _ = mean_spread(values, spread)
        out.append(entry)
    return out


def format_mean(mean, spread=float("nan"), digits=3, missing="—"):
    r"""``"mean ± spread"`` (or ``"mean"`` without a finite spread, ``missing`` without a mean).

    :param float mean: the mean.
    :param float spread: its spread.
    :param int digits: digits after the decimal point.
    :param str missing: what a NaN mean is shown as.
    """
    if mean is None or not math.isfinite(mean):
        return missing
    if spread is None or not math.isfinite(spread):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def markdown_table(header, rows):
    r"""A markdown table.

    :param header: the column titles.
    :param rows: the rows, sequences of cells (converted with ``str``).
    """
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)
