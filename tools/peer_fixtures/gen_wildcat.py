"""Parity fixture of the WildCat port: runs the reference WildCat forward pass with injected
Gumbel uniforms and writes tests/attention/fixtures/wildcat_parity.safetensors.

microsoft/wildcat cannot be fetched as a repository; its files were read one by one (at the
commits below, peers.md §0) and saved by hand outside this repository, in --ref-dir
(e.g. /work/ref/wildcat) as <ref-dir>/wildcat/<file>:
  wildcat/wildcat.py      e0b728cc24cc8d8a943677f73cc878da0a480d90  (bins, clamp, remainder)
  wildcat/compress_kv.py  93e0a28d4371f0b73d65b5b9197386b6612da98c  (newest τ, Nyström weights)
  wildcat/rp_nystrom.py   116644628cb57a4b397325e4e3e13d673e1eb361  (RPCholesky, eager mode)
No reference code is copied here. At run time (Debian /usr/bin/python3, torch 1.13):
  - torch.compile (absent in 1.13) becomes the identity decorator;
  - wildcat.py imports `wildcat.compresskv` (the older Lambert-W temperature); it is pointed at
    compress_kv.py, the newest temperature τ² = ρ₂·k_scale/q_scale that the port follows;
  - wildcat/weighted_attention.py and wildcat/math_utils.py are not in the index: the former is
    written below from peers.md §2.2 step 8 (max-shifted logits, den <= 1e-20 → 0, clamp), the
    latter is an unused placeholder;
  - Tensor.uniform_ (rp_nystrom's only random draw) is replaced by the injected uniforms
    u [B, H, r/C, Nk]: at pivot iteration t, key j of bin c gets u[b, h, t, c·(Nk/C) + j],
    the layout of the port's call.injected.uniforms.
All cases divide Nk by C exactly (the reference mis-shapes q_scale for a remainder bin).

Usage: /usr/bin/python3 tools/peer_fixtures/gen_wildcat.py --ref-dir /work/ref/wildcat
"""
import argparse
import math
import os
import sys
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
COMMITS = {
    "wildcat/wildcat.py": "e0b728cc24cc8d8a943677f73cc878da0a480d90",
    "wildcat/compress_kv.py": "93e0a28d4371f0b73d65b5b9197386b6612da98c",
    "wildcat/rp_nystrom.py": "116644628cb57a4b397325e4e3e13d673e1eb361",
}
# name: (B, H, Nq, Nk, D, Dv, r, C, scale, key mean offset, key spread)
CASES = {
    "c1": (1, 2, 10, 24, 6, 5, 5, 1, 0.4, 0.7, 1.0),
    "c4": (2, 1, 9, 32, 5, 3, 12, 4, 1 / math.sqrt(5), -0.5, 1.3),
    "c3pad": (1, 2, 7, 30, 4, 6, 7, 3, 0.6, 0.3, 0.9),
}


def weighted_attention(queries, core_keys, core_values, core_one, scale, min_val, max_val):
    """peers.md §2.2 step 8 (the reference file is not available)."""
    logits = scale * torch.einsum("...te,...re->...tr", queries, core_keys)
    logits = (logits - logits.amax(-1, keepdim=True)).exp()
    den = torch.einsum("...tr,...r->...t", logits, core_one).unsqueeze(-1)
    num = torch.einsum("...tr,...rd->...td", logits, core_values)
    out = torch.where(den > 1e-20, num / den, torch.zeros_like(num))
    return out.clamp(min=min_val, max=max_val)


class Feeder:
    """Serves the injected uniforms to Tensor.uniform_ inside the reference's compress_kv."""

    def __init__(self):
        self.blocks = None  # [P, r_bin, n] for the current compress_kv call
        self.t = 0

    def uniform_(self, tensor, *args, **kwargs):
        assert self.blocks is not None, "uniform_ outside compress_kv"
        block = self.blocks[:, self.t, :]
        assert tuple(tensor.shape) == tuple(block.shape), (tensor.shape, block.shape)
        self.t += 1
        return tensor.copy_(block)


def load_reference(ref_dir):
    if not hasattr(torch, "compile"):
        torch.compile = lambda *a, **k: (lambda f: f)
    pkg = types.ModuleType("wildcat")
    pkg.__path__ = [os.path.join(ref_dir, "wildcat")]
    sys.modules["wildcat"] = pkg
    math_utils = types.ModuleType("wildcat.math_utils")
    math_utils.lambert_w_circ_exp = None  # imported by the reference, used only by τ variants
    sys.modules["wildcat.math_utils"] = math_utils
    wa = types.ModuleType("wildcat.weighted_attention")
    wa.weighted_attention = weighted_attention
    sys.modules["wildcat.weighted_attention"] = wa
    import importlib
    ckv = importlib.import_module("wildcat.compress_kv")
    sys.modules["wildcat.compresskv"] = ckv
    wc = importlib.import_module("wildcat.wildcat")
    return wc, ckv


def run_case(wc, name, spec, rng, out):
    b, h, nq, nk, d, dv, r, c, scale, offset, spread = spec
    q = torch.from_numpy(rng.standard_normal((b, h, nq, d)))
    k = torch.from_numpy(rng.standard_normal((b, h, nk, d)) * spread + offset)
    v = torch.from_numpy(rng.standard_normal((b, h, nk, dv)))
    r_bin = -(-r // c)
    width = nk // c
    assert nk % c == 0 and width > r_bin
    u = np.clip(rng.random((b, h, r_bin, nk)), 1e-12, 1 - 1e-12)
    # Per compress_kv call: bins in the reference's row order (b·H + h)·C + c.
    blocks = torch.from_numpy(u.reshape(b * h, r_bin, c, width).transpose(0, 2, 1, 3)
                              .reshape(b * h * c, r_bin, width).copy())
    feeder = Feeder()
    captured = {}
    inner = wc.compress_kv

    def compress_kv(keys, values, rr, sc, q_scale):
        feeder.blocks, feeder.t = blocks, 0
        result = inner(keys, values, rr, sc, q_scale)
        assert feeder.t == rr, (feeder.t, rr)
        captured["keys"], captured["values"], captured["w"] = result
        feeder.blocks = None
        return result

    wc.compress_kv = compress_kv
    saved = torch.Tensor.uniform_
    torch.Tensor.uniform_ = lambda self, *a, **kw: feeder.uniform_(self, *a, **kw)
    try:
        module = wc.WildCat(scale=scale, r=r, num_bins=c)
        result = module(q, k, v, scale)
    finally:
        torch.Tensor.uniform_ = saved
        wc.compress_kv = inner
    coreset = r_bin * c
    out[f"{name}_q"] = q
    out[f"{name}_k"] = k
    out[f"{name}_v"] = v
    out[f"{name}_uniforms"] = torch.from_numpy(u)
    out[f"{name}_out"] = result
    out[f"{name}_coreset_keys"] = captured["keys"].reshape(b, h, coreset, d)
    out[f"{name}_coreset_values"] = captured["values"].reshape(b, h, coreset, dv)
    out[f"{name}_coreset_weights"] = captured["w"].reshape(b, h, coreset)
    out[f"{name}_settings"] = np.array([b, h, nq, nk, d, dv, r, c], dtype=np.int64)
    out[f"{name}_scale"] = np.array([scale], dtype=np.float64)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref-dir", required=True, help="directory holding wildcat/*.py")
    parser.add_argument("--out", default=os.path.join(
        REPO, "tests/attention/fixtures/wildcat_parity.safetensors"))
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    wc, _ = load_reference(os.path.abspath(args.ref_dir))
    rng = np.random.default_rng(20260211)
    out = {}
    for name, spec in CASES.items():
        run_case(wc, name, spec, rng, out)
    metadata = {f"commit {path}": commit for path, commit in COMMITS.items()}
    metadata["cases"] = ",".join(CASES)
    metadata["layout"] = ("<case>_{q,k,v} [B,H,N,.] float64; <case>_uniforms [B,H,r/C,Nk]; "
                          "<case>_out reference output; <case>_coreset_* the reference's "
                          "compress_kv outputs; <case>_settings B,H,Nq,Nk,D,Dv,r,C")
    safetensors_io.save(args.out, out, metadata)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
