"""Parity fixture for attention/hyperattention: runs the reference HyperAttention
(insuhan/hyper-attn @ 68b91e9b, models/attention/*.py, the PyTorch cuda=False path) with injected
hyperplanes and residual samples, and writes tests/attention/fixtures/hyperattention_parity.safetensors.

The reference files are read from the bare mirror at run time into a temporary directory (never
copied into this repository). Run with Debian's Python (torch 1.13, numpy):
    /usr/bin/python3 tools/peer_fixtures/gen_hyperattention.py [--mirror DIR] [--out FILE]
Run-time patches: a stub `einops.rearrange` for the one pattern the module uses, a stub Triton
module (only the half-precision path imports it), torch.randint returning the injected samples.

Two outputs per case:
  out_ref / lse_ref     the reference as it runs in float64: its exact_attention() ignores the
                        `bias` that carries the in-block mask (only the fp16/bf16 Triton kernel
                        applies it), so sampled keys inside the query's own block count twice;
  out_dedup / lse_dedup the same with the bias applied (the mask the reference builds), i.e. the
                        estimator of peers.md §3.4.
Samples are stored as original key indices (the reference draws sorted positions; they are mapped
through its key sort).
"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402

COMMIT = "68b91e9b"
FILES = ["angular_lsh.py", "hyper_attn.py", "utils.py"]
EINOPS_STUB = '''
def rearrange(x, pattern):
    if pattern.replace(" ", "") == "n->1n1":
        return x.view(1, -1, 1)
    raise NotImplementedError(pattern)
'''
TRITON_STUB = '''
def flash_attn_func(*args, **kwargs):
    raise NotImplementedError("half-precision Triton path is not used by the fixture")
'''

# name, B, H, Nq, Nk, D, block b, samples s, projections r, scale
CASES = [
    ("divisible", 1, 2, 96, 96, 8, 16, 8, 3, 0.5),
    ("padded", 1, 2, 90, 90, 8, 16, 8, 3, 0.5),
    ("nq2nk_padded", 1, 2, 120, 60, 8, 16, 12, 4, 0.4),
    ("block_only", 2, 1, 64, 64, 8, 16, 0, 3, 0.5),
]


def extract(mirror, tmp):
    pkg = os.path.join(tmp, "hyperref")
    os.makedirs(pkg)
    for name in FILES:
        reference.write(pkg, name, reference.git_show(mirror, COMMIT, f"models/attention/{name}"))
    reference.write(pkg, "__init__.py", "")
    reference.write(pkg, "flash_attn_triton_for_hyper.py", TRITON_STUB)
    reference.write(tmp, "einops.py", EINOPS_STUB)
    return reference.import_from(tmp, "hyperref.hyper_attn")


def exact_attention_with_bias(query, key, value, softmax_scale, causal=False, bias=None):
    """Exact attention with the additive bias applied (what the Triton kernel does)."""
    assert not causal
    qk = query @ key.transpose(-1, -2) * softmax_scale
    if bias is not None:
        qk = qk + bias
    return qk.softmax(dim=-1) @ value, torch.logsumexp(qk, dim=-1, keepdim=True)


def run_case(ha, case, gen):
    name, b_, h_, nq, nk, d, block, s, r, scale = case
    q = torch.randn(b_, h_, nq, d, generator=gen, dtype=torch.float64) * 1.5
    k = torch.randn(b_, h_, nk, d, generator=gen, dtype=torch.float64) * 1.5
    v = torch.randn(b_, h_, nk, d, generator=gen, dtype=torch.float64)
    proj = torch.randn(d, r, generator=gen, dtype=torch.float64)
    sampled = torch.randint(nk, (b_, h_, max(s, 1)), generator=gen)[..., :s]
    module = ha.HyperAttention(input_dim=d, lsh_num_projs=r, block_size=block, sample_size=s,
                               min_seq_len=0, cuda=False)
    module.lsh.proj_dir = proj.view(1, 1, d, r)
    key_sort = torch.sort(module.lsh.hash(k), dim=2, stable=True)[1]
    out = {f"{name}_q": q, f"{name}_k": k, f"{name}_v": v, f"{name}_proj": proj}
    if s > 0:
        out[f"{name}_samples"] = key_sort.gather(2, sampled)
    real_randint, real_exact = torch.randint, ha.exact_attention
    for tag, exact in (("ref", real_exact), ("dedup", exact_attention_with_bias)):
        torch.randint = lambda *a, **kw: sampled.clone()
        ha.exact_attention = exact
        try:
            attn, lse = module(q, k, v, scale=scale, causal=False, return_lse=True)
        finally:
            torch.randint, ha.exact_attention = real_randint, real_exact
        out[f"{name}_out_{tag}"] = attn
        out[f"{name}_lse_{tag}"] = lse.squeeze(-1)
    return out


def main():
    args = reference.parse_args("/work/.mirror/insuhan+hyper-attn/repo",
                                "hyperattention_parity.safetensors")
    tensors = reference.run_cases(args.mirror, extract, run_case, CASES, 20231130)
    reference.save(args.out, tensors, f"insuhan/hyper-attn@{COMMIT} models/attention (cuda=False)",
                   CASES, "name,B,H,Nq,Nk,D,block_size,sample_size,num_projections,scale",
                   bucket_order="reference (perm[code] = gray(code))")
    for name in sorted(tensors):
        if name.endswith("_out_ref"):
            base = name[:-len("_out_ref")]
            diff = (tensors[name] - tensors[base + "_out_dedup"]).abs().max().item()
            print(f"{base}: max |out_ref - out_dedup| = {diff:.3g}")
    if not math.isfinite(float(sum(t.double().abs().sum() for t in tensors.values()))):
        raise SystemExit("non-finite fixture")


if __name__ == "__main__":
    main()
