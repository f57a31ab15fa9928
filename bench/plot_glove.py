#!/usr/bin/python3
"""Plots the summary of bench/glove_experiment: one PNG per metric (relative spectral error,
centered error), one row of panels per n: error vs m (per-query keys or features, peers.md §8)
and error vs median time per call, log-log, every method, with the trivial floor "every row =
mean(V)" as a horizontal line and exact attention's time as a vertical one.

usage: /usr/bin/python3 bench/plot_glove.py summary.csv OUT_DIR
Writes OUT_DIR/rel_error.png and OUT_DIR/centered_error.png. Runs with Debian's
python3-matplotlib (no other dependency)."""
import csv
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRICS = (("mean_rel_error", "floor_rel_error", "relative spectral error", "rel_error.png"),
           ("mean_centered_error", "floor_centered_error", "centered error",
            "centered_error.png"))


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    rows = list(csv.DictReader(open(sys.argv[1])))
    if not rows:
        sys.exit(f"{sys.argv[1]}: no rows")
    regime = rows[0]["regime"]
    sizes = sorted({int(r["n"]) for r in rows})
    variants = []
    for r in rows:
        if r["variant"] not in variants and not r["variant"].startswith("exact") \
                and r["variant"] != "trivial":
            variants.append(r["variant"])
    style = {v: (f"C{i % 10}", "osx^vD<>p*h"[i % 11]) for i, v in enumerate(variants)}
    for column, floor_column, label, filename in METRICS:
        series = defaultdict(list)  # (n, variant) -> [(m, seconds, error)]
        floor, exact_s, failed = {}, {}, defaultdict(set)
        for r in rows:
            n, v = int(r["n"]), r["variant"]
            floor[n] = float(r[floor_column])
            if r["exact_median_seconds"]:
                exact_s[n] = float(r["exact_median_seconds"])
            if v == "trivial" or v.startswith("exact"):
                continue
            if not r[column]:
                if r["status"].startswith("failed"):
                    failed[n].add(v)
                continue
            series[(n, v)].append((int(r["m"]), float(r["median_seconds"]), float(r[column])))
        fig, axes = plt.subplots(len(sizes), 2, figsize=(14, 4.8 * len(sizes)), squeeze=False)
        for row, n in enumerate(sizes):
            ax_m, ax_t = axes[row]
            for v in variants:
                pts = sorted(series.get((n, v), []))
                if not pts:
                    continue
                color, marker = style[v]
                ax_m.plot([p[0] for p in pts], [p[2] for p in pts], marker=marker, ls="-",
                          color=color, label=v)
                ax_t.plot([p[1] * 1e3 for p in pts], [p[2] for p in pts], marker=marker, ls="-",
                          color=color, label=v)
            for ax in (ax_m, ax_t):
                if n in floor:
                    ax.axhline(floor[n], color="k", ls="--", lw=1.2,
                               label=f"trivial floor (mean(V)) {floor[n]:.3f}")
            if n in exact_s and exact_s[n] > 0:
                ax_t.axvline(exact_s[n] * 1e3, color="k", ls=":", label="exact attention time")
            note = f"; failed: {', '.join(sorted(failed[n]))}" if failed[n] else ""
            ax_m.set_title(f"{regime} n={n}: {label} vs m{note}", fontsize=9)
            ax_t.set_title(f"{regime} n={n}: {label} vs time per call", fontsize=9)
            for ax, xl in ((ax_m, "m (per-query keys or features)"), (ax_t, "ms per call")):
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_xlabel(xl)
                ax.set_ylabel(label)
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(sys.argv[2], filename)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
