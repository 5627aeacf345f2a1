"""A naive baseline beside our figures: measured where it was run, fitted (and labelled so) elsewhere.

`compare(ours, naive)` takes ``{N: seconds}`` of our path and of the naive baseline measured in the same run and
returns one row per N of ours: the naive figure measured at that N when there is one, else the value of a
least-squares line through every measured point, with its source ("measured" or "fitted") beside it.
"""

import statistics


def fit(naive):
    """(intercept, slope) of the least-squares line through the measured {N: seconds}, or None (< 2 points)."""
    if len(naive) < 2:
        return None
    ns = sorted(naive)
    line = statistics.linear_regression(ns, [naive[n] for n in ns])
    return line.intercept, line.slope


def compare(ours, naive):
    line = fit(naive)
    rows = []
    for n in sorted(ours):
        if n in naive:
            value, source = naive[n], "measured"
        elif line:
            value, source = line[0] + line[1] * n, "fitted"
        else:
            continue
        rows.append({"n": n, "ours_s": ours[n], "naive_s": round(value, 2), "naive_source": source,
                     "speedup": round(value / ours[n], 1) if ours[n] else None})
    return rows


def print_table(rows, unit="N"):
    print(f"\n{unit:>6} {'ours s':>9} {'naive s':>9} {'naive is':>9} {'speed-up':>9}")
    for r in rows:
        print(f"{r['n']:>6} {r['ours_s']:>9.2f} {r['naive_s']:>9.1f} {r['naive_source']:>9} {r['speedup']:>8.1f}x")


def report(out, per="per_n_s"):
    """Fit, compare and print ``out = {"ours": {N: {"fresh_s"...}}, "naive": {N: {"fresh_s"...}}}`` in place:
    ``out["naive_fit"]`` and, per N of ours, ``naive_s``, ``naive_source`` ("measured" | "fitted"), ``speedup``."""
    naive = {n: v["fresh_s"] for n, v in out["naive"].items()}
    line = fit(naive)
    if line:
        out["naive_fit"] = {"intercept_s": round(line[0], 2), per: round(line[1], 3), "from_n": sorted(naive)}
        print(f"\nnaive least-squares fit over N={sorted(naive)} (this run): t = {line[0]:.2f} s + "
              f"{line[1]:.3f} s x N")
    rows = compare({n: v["fresh_s"] for n, v in out["ours"].items()}, naive)
    for r in rows:
        out["ours"][r["n"]].update(naive_s=r["naive_s"], naive_source=r["naive_source"], speedup=r["speedup"])
    print_table(rows)
    return rows
