#!/usr/bin/python3
"""Plots the GloVe experiment summary (bench/glove_experiment): error vs m and vs wall-clock,
log-log, for each bucket convention, plus KDEformer's error vs m for every n.

usage: /usr/bin/python3 bench/plot_glove.py summary.csv out.png [n]
Runs with Debian's python3-matplotlib (no other dependency)."""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rows = list(csv.DictReader(open(sys.argv[1])))
    sizes = sorted({int(r["n"]) for r in rows})
    n = int(sys.argv[3]) if len(sys.argv) > 3 else (8192 if 8192 in sizes else sizes[-1])
    conventions = sorted({r["convention"] for r in rows if r["convention"].startswith("b=")},
                         key=lambda c: (c != "b=m/2", c))
    series = defaultdict(list)  # (n, label, convention) -> [(m, seconds, error)]
    exact_s = {}
    for r in rows:
        rn, method = int(r["n"]), r["method"]
        if method == "exact":
            exact_s[rn] = float(r["mean_seconds"])
            continue
        m = int(r["samples"]) if method != "block_only" else 2 * int(r["bucket"])
        label = method if r["order"] == "-" else f"{method} ({r['order']})"
        for conv in conventions:
            if r["convention"] in (conv, "-"):
                if method == "block_only" and r["convention"] != conv:
                    continue
                series[(rn, label, conv)].append((m, float(r["mean_seconds"]),
                                                  float(r["mean_rel_error"])))
    fig, axes = plt.subplots(len(conventions), 3, figsize=(17, 5 * len(conventions)),
                             squeeze=False)
    styles = {"kdeformer (gray)": "o-", "kdeformer (reference)": "s--",
              "block_only (gray)": "^-", "uniform": "x:"}
    colors = {"kdeformer (gray)": "C0", "kdeformer (reference)": "C1",
              "block_only (gray)": "C2", "uniform": "C3"}
    for row, conv in enumerate(conventions):
        ax_m, ax_t, ax_n = axes[row]
        for (rn, label, c), pts in sorted(series.items()):
            if rn != n or c != conv or label not in styles:
                continue
            pts.sort()
            if label.startswith("block_only") and conv != "b=m/2":
                ax_t.plot([p[1] * 1e3 for p in pts], [p[2] for p in pts], styles[label],
                          color=colors[label], label=f"{label}, b={pts[0][0] // 2}")
                ax_m.axhline(pts[0][2], color=colors[label], lw=1, ls="-.",
                             label=f"{label}, b={pts[0][0] // 2}")
                continue
            ax_m.plot([p[0] for p in pts], [p[2] for p in pts], styles[label],
                      color=colors[label], label=label)
            ax_t.plot([p[1] * 1e3 for p in pts], [p[2] for p in pts], styles[label],
                      color=colors[label], label=label)
        if n in exact_s:
            ax_t.axvline(exact_s[n] * 1e3, color="k", ls=":", label="exact attention time")
        for ax, xl in ((ax_m, "m (samples; block-only: 2b)"), (ax_t, "wall-clock (ms)")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(xl)
            ax.set_ylabel("relative spectral error")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        ax_m.set_title(f"GloVe n={n}, {conv}: error vs m")
        ax_t.set_title(f"GloVe n={n}, {conv}: error vs wall-clock")
        for rn in sizes:
            pts = sorted(series.get((rn, "kdeformer (gray)", conv), []))
            if pts:
                ax_n.plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=f"n={rn}")
        ax_n.set_xscale("log")
        ax_n.set_yscale("log")
        ax_n.set_xlabel("m (samples)")
        ax_n.set_ylabel("relative spectral error")
        ax_n.set_title(f"KDEformer (gray), {conv}: every n")
        ax_n.grid(True, which="both", alpha=0.3)
        ax_n.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)
    print(f"wrote {sys.argv[2]}")


if __name__ == "__main__":
    main()
