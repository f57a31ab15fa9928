"""Parity fixture for attention/reformer: runs the KDEformer authors' root Reformer.py
(majid-daliri/kdeformer @ 427df2d5, class ReformerAttention, as demo_glove.py and the BigGAN
wrapper call it: shared-QK, no softmax scale, zero padding unmasked, look-back across rounds)
with injected rotations, and writes tests/attention/fixtures/reformer_parity.safetensors.

The reference file is read from the bare mirror at run time into a temporary directory (never
copied into this repository). Run with Debian's Python (torch 1.13, numpy):
    /usr/bin/python3 tools/peer_fixtures/gen_reformer.py [--mirror DIR] [--out FILE]
Run-time patches: a stub `einops.rearrange` for the two patterns the module uses, and
torch.randn returning the injected rotations (shape [1, D, n_hashes, n_buckets/2] upstream;
stored as [n_hashes, D, n_buckets/2], the layout of InjectedRandomness::rotations).
Tensors are stored in kdeserve's [B, H, N, D] layout.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402

COMMIT = "427df2d5"
EINOPS_STUB = '''
def rearrange(x, pattern):
    p = pattern.replace(" ", "")
    if p in ("bthe->(bh)te", "bshd->(bh)sd"):
        b, t, h, e = x.shape
        return x.permute(0, 2, 1, 3).reshape(b * h, t, e)
    raise NotImplementedError(pattern)
'''

# name, B, H, N, D, Dv, bucket_size, n_hashes
CASES = [
    ("divisible", 1, 2, 64, 8, 6, 8, 3),
    ("padded", 1, 2, 60, 8, 8, 8, 2),
    ("padded_wide", 2, 1, 40, 6, 5, 16, 4),
    ("one_hash", 1, 1, 48, 8, 8, 8, 1),
]


def extract(mirror, tmp):
    reference.write(tmp, "Reformer.py", reference.git_show(mirror, COMMIT, "Reformer.py"))
    reference.write(tmp, "einops.py", EINOPS_STUB)
    return reference.import_from(tmp, "Reformer")


def run_case(ref, case, gen):
    name, b_, h_, n, d, dv, bucket, hashes = case
    q = torch.randn(b_, h_, n, d, generator=gen, dtype=torch.float64) * 1.5
    v = torch.randn(b_, h_, n, dv, generator=gen, dtype=torch.float64)
    padded = -(-n // (2 * bucket)) * 2 * bucket
    half = padded // bucket // 2
    rot = torch.randn(hashes, d, half, generator=gen, dtype=torch.float64)
    module = ref.ReformerAttention(bucket_size=bucket, n_hashes=hashes)
    real_randn = torch.randn
    torch.randn = lambda *a, **kw: rot.permute(1, 0, 2).unsqueeze(0).clone()
    try:
        out, _ = module(qk=q.permute(0, 2, 1, 3), k=None, v=v.permute(0, 2, 1, 3))
    finally:
        torch.randn = real_randn
    return {f"{name}_q": q, f"{name}_v": v, f"{name}_rotations": rot,
            f"{name}_out": out.reshape(b_, h_, n, dv)}


def main():
    args = reference.parse_args("/work/.mirror/majid-daliri+kdeformer/repo",
                                "reformer_parity.safetensors")
    tensors = reference.run_cases(args.mirror, extract, run_case, CASES, 20250317)
    reference.save(args.out, tensors,
                   f"majid-daliri/kdeformer@{COMMIT} Reformer.py ReformerAttention", CASES,
                   "name,B,H,N,D,Dv,bucket_size,n_hashes",
                   mode="shared_qk, scale 1, unmasked zero padding, look-back across rounds")
    for name in sorted(tensors):
        print(name, tuple(tensors[name].shape))


if __name__ == "__main__":
    main()
