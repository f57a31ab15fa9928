#!/usr/bin/python3
"""Checks glove_experiment's GloVe protocol against an independent numpy computation: runs the
harness at n = 1024 (one pair, exact and KDEformer), then recomputes exact attention of
Q = K = rows[0:n] / 10^{1/4}, V = rows[32768:32768 + n] in float64 and compares the trivial
floor ‖1·mean(V) − A‖₂/‖A‖₂ (which fixes the query scaling and the row layout) and checks the
centered floor is 1 and KDEformer's errors are finite and above 0.

usage: check_glove_protocol.py GLOVE_EXPERIMENT_BINARY OUT_DIR
Exit 77 (ctest: skipped) when the shared GloVe file is absent."""
import csv
import math
import os
import subprocess
import sys

import numpy as np

N = 1024
VALUE_OFFSET = 32768


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    binary, out = sys.argv[1], sys.argv[2]
    source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shared = os.environ.get("KDESERVE_SHARED_DIR", os.path.join(source, "..", "shared"))
    data = os.path.join(shared, "data", "glove", "glove.6B.100d.wink-first49152.f32")
    if not os.path.exists(data):
        print(f"skipped: no {data}")
        return 77
    subprocess.run([binary, "--data", data, "--sizes", str(N), "--samples", "64", "--pairs", "1",
                    "--reps", "1", "--threads", "1", "--methods", "exact,kdeformer",
                    "--require", "exact,kdeformer", "--no-plot", "--out", out], check=True)
    rows = {r["variant"]: r for r in csv.DictReader(open(os.path.join(out, "summary.csv")))}
    x = np.fromfile(data, dtype=np.float32).reshape(-1, 100).astype(np.float64)
    q, v = x[:N] / 10 ** 0.25, x[VALUE_OFFSET:VALUE_OFFSET + N]
    s = q @ q.T
    p = np.exp(s - s.max(axis=1, keepdims=True))
    a = (p / p.sum(axis=1, keepdims=True)) @ v
    floor = np.linalg.norm(v.mean(axis=0, keepdims=True) - a, 2) / np.linalg.norm(a, 2)
    got = float(rows["trivial"]["mean_rel_error"])
    failures = []
    if abs(got - floor) > 1e-6 * floor:
        failures.append(f"trivial floor {got} != numpy {floor}")
    if abs(float(rows["trivial"]["mean_centered_error"]) - 1) > 1e-9:
        failures.append(f"centered floor {rows['trivial']['mean_centered_error']} != 1")
    for metric in ("mean_rel_error", "mean_centered_error"):
        value = float(rows["kdeformer"][metric])
        if not (math.isfinite(value) and value > 0):
            failures.append(f"kdeformer {metric} = {value}")
    print(f"trivial floor: harness {got:.6f}, numpy {floor:.6f}")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
