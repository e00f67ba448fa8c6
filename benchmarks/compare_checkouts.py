"""Step-time ratios of two checkouts of pyro-vsm, measured interleaved in one run.

Runs ``benchmarks/step_time.py`` of the ``--new`` checkout alternately against the library of an
``--old`` and a ``--new`` checkout (``PYTHONPATH``), one round at a time, so both see the same
machine load. Per loss it reports the median over rounds of each checkout's ratio to Trace_ELBO
and the relative change of that ratio. Writes JSON.

    python benchmarks/compare_checkouts.py --old ../old-checkout --new . [--rounds 5]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def run_once(script, checkout, extra):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "step_time.json")
        env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout))
        cmd = [sys.executable, script, "--rounds", "1", "--out", out]
        subprocess.run(cmd + extra, env=env, check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            return json.load(f)["ratio_to_trace_elbo"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, help="path of the old checkout")
    p.add_argument("--new", default=os.path.dirname(HERE), help="path of the new checkout")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="results/compare_checkouts.json")
    p.add_argument("extra", nargs="*", help="arguments passed on to step_time.py (after --)")
    args = p.parse_args(argv)
    script = os.path.join(os.path.abspath(args.new), "benchmarks", "step_time.py")
    runs = {"old": [], "new": []}
    for r in range(args.rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for which in order:
            runs[which].append(run_once(script, getattr(args, which), args.extra))
            print(f"round {r + 1}/{args.rounds}: {which} done", flush=True)
    names = list(runs["new"][0])
    table = {}
    for name in names:
        old = statistics.median(run[name] for run in runs["old"])
        new = statistics.median(run[name] for run in runs["new"])
        table[name] = {"old": old, "new": new, "change": new / old - 1.0}
    result = {"rounds": args.rounds, "old": args.old, "new": args.new, "ratios": table}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    width = max(map(len, names))
    print(f"{'loss':<{width}}  old ratio  new ratio  change")
    for name, row in table.items():
        print(f"{name:<{width}}  {row['old']:9.3f}  {row['new']:9.3f}  {row['change']:+7.1%}")
    return result


if __name__ == "__main__":
    main()
