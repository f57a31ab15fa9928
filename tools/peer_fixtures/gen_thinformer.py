#!/usr/bin/python3
"""Writes tests/attention/fixtures/thinformer_parity.safetensors: the reference Thinformer
(microsoft/thinformer f5b1f260, thinformer/thinformer.py) run on small float64 cases with its
randomness injected, for tests/attention/thinformer_test.cpp.

The reference module is extracted from the bare mirror into a temporary directory at run time
(it never enters this repository) and run with Debian's torch 1.13 (/usr/bin/python3), which
lacks torch.compile, torch.compiler and F.scaled_dot_product_attention: those are stubbed before
the import (compile becomes the identity; the SDPA path is not used).

Injection: the module's `empty` is replaced. Float `empty(B, A, H, n).uniform_(lo, hi)` (the walk's
uniforms of one halving round) returns lo + (hi − lo)·u from our uniforms [B, H, P] in the layout
attention/thinformer/thinformer.h documents (round offset, then bucket·n + j); the bool
`empty(1).bernoulli_()` returns the round's coin from coins [R] (shared by the batch, as upstream).
`halve_K` is wrapped to record each round's kept indices, composed into original key indices.

Usage: /usr/bin/python3 tools/peer_fixtures/gen_thinformer.py [--mirror DIR] [--out FILE]
"""
import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

COMMIT = "f5b1f2602d36900661badd218236df62df79462f"
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# name: (B, H, Nq, Nk, D, Dv, g, scale)
CASES = {
    "a": (2, 2, 24, 80, 8, 12, 1, 0.3),   # n' = 64 (stride 1, 16 keys dropped), R = 2
    "b": (1, 3, 17, 200, 6, 5, 0, 0.5),   # n' = 64 (stride 3), g = 0, R = 3
    "c": (1, 2, 40, 256, 16, 24, 2, 0.25),  # upstream's g = 2: buckets 64, 128, R = 2
    "d": (2, 1, 9, 50, 4, 7, 2, 0.5),     # n' = 16 < 4^3: pure stride-3 subsample, no halving
}


def load_reference(mirror, tmp):
    source = subprocess.check_output(
        ["git", "-C", mirror, "show", f"{COMMIT}:thinformer/thinformer.py"])
    path = os.path.join(tmp, "thinformer_reference.py")
    with open(path, "wb") as f:
        f.write(source)
    if not hasattr(torch, "compile"):
        torch.compile = lambda *args, **kwargs: (lambda fn: fn)
    if not hasattr(torch, "compiler"):
        torch.compiler = types.SimpleNamespace(cudagraph_mark_step_begin=lambda: None)
    if not hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        def no_sdpa(*args, **kwargs):
            raise RuntimeError("not available in torch 1.13")
        torch.nn.functional.scaled_dot_product_attention = no_sdpa
    spec = importlib.util.spec_from_file_location("thinformer_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Injector:
    """Stands in for the module's `empty`, handing out our uniforms and coins in order."""

    def __init__(self, uniforms, coins):
        self.uniforms = torch.from_numpy(uniforms)  # [B, H, P]
        self.coins = list(coins)
        self.offset = 0

    def __call__(self, *size, device=None, dtype=None):
        if dtype is torch.bool:
            if tuple(size) == (1,):
                return _Coin(self)
            return torch.empty(*size, device=device, dtype=dtype)
        return _Uniforms(self, size)


class _Coin:
    def __init__(self, injector):
        self.injector = injector

    def bernoulli_(self):
        return torch.tensor([bool(self.injector.coins.pop(0))])


class _Uniforms:
    def __init__(self, injector, size):
        self.injector, self.size = injector, size

    def uniform_(self, lo, hi):
        b, a, h, n = self.size
        inj = self.injector
        block = inj.uniforms[:, :, inj.offset:inj.offset + a * n].reshape(b, h, a, n)
        inj.offset += a * n
        return lo + (hi - lo) * block.permute(0, 2, 1, 3)


def run_case(module, rng, b, h, nq, nk, d, dv, g, scale):
    q = rng.standard_normal((b, h, nq, d))
    k = rng.standard_normal((b, h, nk, d)) * 1.2
    v = rng.standard_normal((b, h, nk, dv)) + 0.3
    log4 = (nk.bit_length() - 1) // 2
    n = 4 ** log4
    stride = nk // n
    rounds = log4 - g if n >= 4 ** (g + 1) else 0
    pairs = n - (n >> rounds)
    uniforms = rng.random((b, h, pairs))
    coins = rng.integers(0, 2, size=rounds)

    records = []
    original_halve_k = module.halve_K

    def recording_halve_k(kernel, delta=0.5, symmetrize=False):
        kept = original_halve_k(kernel, delta, symmetrize=symmetrize)
        records.append(kept.clone())
        return kept

    injector = Injector(uniforms, coins)
    module.empty = injector
    module.halve_K = recording_halve_k
    attn = module.ThinformerAttention(g=g, scale=scale)
    to_ref = lambda x: torch.from_numpy(x).permute(0, 2, 1, 3).contiguous()  # [B, N, H, E]
    with torch.no_grad():
        out, _ = attn(to_ref(q), to_ref(k), to_ref(v))
    module.halve_K = original_halve_k
    assert len(records) == rounds and not injector.coins and injector.offset == pairs

    idx = np.broadcast_to(np.arange(0, n * stride, stride), (b, h, n)).copy()
    for kept in records:  # [B, A, H, S/2] local indices of each bucket
        kept = kept.permute(0, 2, 1, 3).numpy()  # [B, H, A, S/2]
        size = idx.shape[2] // kept.shape[2]
        flat = (kept + size * np.arange(kept.shape[2])[None, None, :, None]).reshape(b, h, -1)
        idx = np.take_along_axis(idx, flat, axis=2)
    return {
        "q": q, "k": k, "v": v, "uniforms": uniforms, "coins": coins.astype(np.int64),
        "coreset": idx.astype(np.int64), "out": out.permute(0, 2, 1, 3).numpy().copy(),
        "settings": np.array([g, scale, stride, rounds], dtype=np.float64),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", default="/work/.mirror/microsoft+thinformer/repo")
    parser.add_argument("--out", default=os.path.join(
        ROOT, "tests", "attention", "fixtures", "thinformer_parity.safetensors"))
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(20250710)
    tensors = {}
    with tempfile.TemporaryDirectory() as tmp:
        module = load_reference(args.mirror, tmp)
        for name, case in CASES.items():
            for key, value in run_case(module, rng, *case).items():
                if value.size:  # case d draws nothing
                    tensors[f"{name}_{key}"] = value
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    safetensors_io.save(args.out, tensors, {
        "reference": f"microsoft/thinformer@{COMMIT} thinformer/thinformer.py",
        "cases": "; ".join(f"{n}: B,H,Nq,Nk,D,Dv,g,scale = {c}" for n, c in CASES.items()),
        "generator": "tools/peer_fixtures/gen_thinformer.py",
    })
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
