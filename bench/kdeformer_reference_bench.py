"""The authors' KDEformer (majid-daliri/kdeformer @ 427df2d, KDEformer.py) timed at
attention_bench's shapes, beside ours in the same bench/run_attention_bench.sh run, with the same
threads, dtype (float32), b and m (attention_bench's paper settings), and PyTorch's SDPA as the
exact reference of this process.

KDEformer.py is read from a bare mirror at run time into a temporary directory, never copied
into this repository (einops, which it imports, is in requirements/checks.txt). The reference exponentiates unshifted logits, so q arrives scaled
(its forward applies no scale). Run with the project venv:
    .venv/bin/python bench/kdeformer_reference_bench.py --threads N [--mirror DIR] [--csv FILE]
Prints one line per shape: ms per call (median of --reps after a warm-up) for the reference and
for SDPA.
"""
import argparse
import csv
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

COMMIT = "427df2d56b7b97d1547464396755d3a453ea7e82"
# name, batch, nq, nk, D, Dv, b, m, scale (bench/attention_bench.cpp, bench/budget.cpp)
SHAPES = [
    ("t2t_layer1", 8, 3136, 3136, 64, 64, 32, 98, 1 / math.sqrt(147)),
    ("t2t_layer2", 8, 784, 784, 64, 64, 32, 24, 1 / 24),
    ("biggan", 1, 4096, 1024, 64, 256, 64, 128, 1.0),
    ("n=8192", 1, 8192, 8192, 64, 64, 64, 128, 1 / 8),
    ("n=16384", 1, 16384, 16384, 64, 64, 64, 128, 1 / 8),
]


def load_reference(mirror, tmp):
    src = subprocess.check_output(["git", "-C", mirror, "show", f"{COMMIT}:KDEformer.py"])
    with open(os.path.join(tmp, "KDEformer.py"), "wb") as f:
        f.write(src)
    sys.path.insert(0, tmp)
    import KDEformer  # noqa: E402
    return KDEformer


def median_ms(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mirror", default=os.environ.get(
        "KDESERVE_KDEFORMER_MIRROR", "/work/.mirror/majid-daliri+kdeformer/repo"))
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--shapes", default="")
    parser.add_argument("--csv", default="")
    args = parser.parse_args()
    if not os.path.isdir(args.mirror):
        print(f"kdeformer_reference_bench: no mirror at {args.mirror} (fetch "
              "github:majid-daliri/kdeformer); skipped")
        return 0
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ref = load_reference(args.mirror, tmp)
        wanted = set(filter(None, args.shapes.split(",")))
        for name, batch, nq, nk, d, dv, b, m, scale in SHAPES:
            if wanted and name not in wanted:
                continue
            # attention_bench's inputs: q, k ~ 0.5 N(0, 1), v ~ N(0, 1); [B, H = 1, N, D].
            q = torch.randn(batch, 1, nq, d, generator=gen) * 0.5
            k = torch.randn(batch, 1, nk, d, generator=gen) * 0.5
            v = torch.randn(batch, 1, nk, dv, generator=gen)
            model = ref.KDEformer(sample_size=m, num_projs=7, Bucket_size=b)
            qs, kt, vt = (q * scale).transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            with torch.no_grad():
                ref_ms = median_ms(lambda: model(qs, kt, vt), args.reps)
                sdpa_ms = float("nan")
                if d == dv:
                    sdpa_ms = median_ms(lambda: torch.nn.functional.scaled_dot_product_attention(
                        q, k, v, scale=scale), args.reps)
            rows.append((name, args.threads, b, m, ref_ms, sdpa_ms))
            print(f"  {name:<12} threads {args.threads}  authors' KDEformer (b={b}, m={m}) "
                  f"{ref_ms:9.2f} ms   SDPA {sdpa_ms:9.2f} ms", flush=True)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["shape", "threads", "b", "m", "reference_ms", "sdpa_ms"])
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
