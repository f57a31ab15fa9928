#!/usr/bin/env python3
"""Checks the frontier goal of a KDEformer variant on glove_experiment summaries.

For every (regime, n, m < n) of each summary.csv given (each file on its own: times compare only
within one run), it compares the variant (default
kdeformer_ff) with the trivial floor and with the best peer at the same m (the peers: every
variant that is not exact, trivial or one of KDEformer's own), and prints, as a Markdown table:
  goal     = 0.9 * min(floor, best peer's error at m)
  ratio    = the variant's error at m / min(floor, best peer) (the margin: <= 0.9 meets it)
  within   = our lowest error over our cells (any m) no slower than that peer
  verdict  = met when that error is <= goal (the goal at no more wall time than the peer)
  centered = whether the variant's centered error is the lowest of every method at m.
Exit status 0; the table is the result (nothing is asserted: bench/RESULTS.md quotes it).

usage: check_frontier.py [--variant NAME] [--metric rel|centered] summary.csv...
"""
import argparse
import csv
import sys
from collections import defaultdict

OWN_PREFIX = "kdeformer"  # every KDEformer variant (paper, far fields, coreset, calibrated)
OWN = {"block_only", "uniform"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="kdeformer_ff",
                    help="ours: one variant, or a comma list (the best of them per cell, as the "
                         "budget chooser would pick)")
    ap.add_argument("--metric", default="rel", choices=["rel", "centered"])
    ap.add_argument("summaries", nargs="+")
    a = ap.parse_args()
    col = "mean_rel_error" if a.metric == "rel" else "mean_centered_error"
    cells = defaultdict(dict)  # (regime, n) -> {(variant, m_requested): row}
    floors = {}
    for path in a.summaries:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                key = (r["regime"], int(r["n"]), path)
                if r["variant"] == "trivial":
                    floors[key] = float(r["floor_rel_error"] if a.metric == "rel"
                                        else r["floor_centered_error"])
                    continue
                measured = r["status"] == "ok" or (r["status"].startswith("skipped")
                                                   and int(r["calls"]) > 0)
                if not measured or r["variant"].startswith("exact"):
                    continue
                # A method whose real m serves several requested ones lists them "32;64".
                for m in r["m_requested"].split(";"):
                    cells[key][(r["variant"], int(m))] = r
    print(f"| regime | n | m | floor | best peer at m [ms] | goal | ours at m [ms] | "
          f"ratio | ours within the peer's time | verdict | lowest centered |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    met_error = met_both = total = 0
    for key in sorted(cells):
        floor = floors.get(key)
        rows = cells[key]
        mine = a.variant.split(",")
        ours_all = [(float(r[col]), float(r["median_seconds"]), m, v)
                    for (v, m), r in rows.items() if v in mine]
        # m >= n: the budget covers every key (methods may be exact there); no frontier.
        for m in sorted({m for (v, m) in rows if v in mine and m < key[1]}):
            e, t, _, which = min(x for x in ours_all if x[2] == m)
            label = f" {which}" if len(mine) > 1 else ""
            peers = [(float(r[col]), v, float(r["median_seconds"]))
                     for (v, mm), r in rows.items() if mm == m and v not in OWN
                     and not v.startswith(OWN_PREFIX)]
            if not peers or floor is None:
                continue
            best = min(peers)
            goal = 0.9 * min(floor, best[0])
            total += 1
            met_error += e <= goal
            # The goal at no more wall time than that peer: our best point no slower than it.
            in_time = [x for x in ours_all if x[1] <= best[2]]
            if in_time:
                bt = min(in_time)
                within = f"{bt[0]:.3f} ({bt[3] + ' ' if len(mine) > 1 else ''}m = {bt[2]}, " \
                         f"{bt[1] * 1e3:.1f} ms)"
                ok = bt[0] <= goal
            else:
                fastest = min(x[1] for x in ours_all)
                within = f"none (fastest {fastest * 1e3:.1f} ms)"
                ok = False
            met_both += ok
            centered = {v: float(r["mean_centered_error"]) for (v, mm), r in rows.items()
                        if mm == m}
            lowest = min(centered, key=centered.get) in mine
            print(f"| {key[0]} | {key[1]} | {m} | {floor:.3f} | {best[1]} {best[0]:.3f} "
                  f"[{best[2] * 1e3:.1f}] | {goal:.3f} | {e:.3f}{label} [{t * 1e3:.1f}] | "
                  f"{e / min(floor, best[0]):.2f} | {within} | {'met' if ok else 'NOT met'} | "
                  f"{'yes' if lowest else 'no'} |")
    print(f"\n{met_error} / {total} cells: error <= goal at the same m; {met_both} / {total}: "
          f"error <= goal at no more wall time than the best peer.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
