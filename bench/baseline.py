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
