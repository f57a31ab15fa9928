"""Parity fixtures of the Performer and ScatterBrain ports (tests/attention/performer_test.cpp,
scatterbrain_test.cpp) from the reference code, with the random directions saved so the C++ tests
can inject them.

References, extracted at run time from the bare mirrors into a temporary directory (never copied
into this repository):
  HazyResearch/fly 6b73449a   src/models/attention/{performer_attention, performer_utils,
                              projection_utils, sblocal_attention, feature_maps_sb,
                              scatterbrain_utils}.py, src/models/modules/masking.py
  majid-daliri/kdeformer 427df2d5   Performer.py
Patched at run time: einops (a small stand-in for the rearrange / repeat patterns these files use)
and fast_transformers.local_product (local_dot_product / local_weighted_average written from
their documented semantics: query i, slot t ↔ key i − ⌊w/2⌋ + t, invalid slots −1e24 / skipped).

Run with Debian's python (torch 1.13, numpy):
  /usr/bin/python3 tools/peer_fixtures/gen_performer_scatterbrain.py [--fly DIR] [--kdeformer DIR]
Writes tests/attention/fixtures/performer_parity.safetensors and scatterbrain_parity.safetensors.
Every tensor is in the port's layout [B, H, N, D] and float64.
"""
import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import types

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

FLY_COMMIT = "6b73449a"
KDEFORMER_COMMIT = "427df2d5"
FLY_FILES = [
    "src/models/attention/performer_attention.py",
    "src/models/attention/performer_utils.py",
    "src/models/attention/projection_utils.py",
    "src/models/attention/sblocal_attention.py",
    "src/models/attention/feature_maps_sb.py",
    "src/models/attention/scatterbrain_utils.py",
    "src/models/modules/masking.py",
]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def extract(repo, commit, path, dest):
    text = subprocess.run(["git", "-C", repo, "show", f"{commit}:{path}"], check=True,
                          capture_output=True).stdout
    out = os.path.join(dest, path)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "wb") as f:
        f.write(text)


def _groups(side):
    return [g.split() if g else [n] for g, n in re.findall(r"\(([^)]*)\)|(\S+)", side)]


def _einops(t, pattern, sizes, allow_new):
    lhs_text, rhs_text = pattern.split("->")
    lhs = lhs_text.split()
    dims = dict(zip(lhs, t.shape))
    dims.update(sizes)
    rhs = _groups(rhs_text)
    flat = [n for g in rhs for n in g if n != "1"]
    x = t.permute(*[lhs.index(n) for n in flat if n in lhs])
    for pos, name in enumerate(flat):
        if name not in lhs:
            assert allow_new, pattern
            x = x.unsqueeze(pos)
            shape = list(x.shape)
            shape[pos] = dims[name]
            x = x.expand(*shape)
    final = [math.prod(dims[n] for n in g if n != "1") for g in rhs]
    return x.reshape(final)


def install_stubs():
    einops = types.ModuleType("einops")
    einops.rearrange = lambda t, p, **s: _einops(t, p, s, False)
    einops.repeat = lambda t, p, **s: _einops(t, p, s, True)
    sys.modules["einops"] = einops

    def band_keys(t_len, s_len, w):
        i = torch.arange(t_len)[:, None]
        j = i - w // 2 + torch.arange(w)[None, :]
        return j, (j >= 0) & (j < s_len)

    def local_dot_product(q, k, attn_mask, key_lengths, w):
        j, valid = band_keys(q.shape[2], k.shape[2], w)
        jc = j.clamp(0, k.shape[2] - 1)
        out = torch.einsum("bhte,bhtle->bhtl", q, k[:, :, jc])
        out = out + attn_mask[torch.arange(q.shape[2])[:, None], jc].to(out)
        valid = valid[None, None] & (j[None, None] < key_lengths[:, None, None, None])
        return out.masked_fill(~valid, -1e24)

    def local_weighted_average(a, v):
        j, valid = band_keys(a.shape[2], v.shape[2], a.shape[3])
        a = a.masked_fill(~valid[None, None], 0.0)
        return torch.einsum("bhtl,bhtld->bhtd", a, v[:, :, j.clamp(0, v.shape[2] - 1)])

    ft = types.ModuleType("fast_transformers")
    lp = types.ModuleType("fast_transformers.local_product")
    lp.local_dot_product = local_dot_product
    lp.local_weighted_average = local_weighted_average
    ft.local_product = lp
    sys.modules["fast_transformers"] = ft
    sys.modules["fast_transformers.local_product"] = lp


def to_port(x):  # reference (B, T, H, E) → port [B, H, T, E]
    return x.permute(0, 2, 1, 3).contiguous()


def randn(*shape, gen):
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def performer_cases(out):
    from src.models.attention.performer_attention import PerformerAttention
    from src.models.attention.projection_utils import gaussian_orthogonal_random_matrix
    import Performer as kdeformer_performer

    gen = torch.Generator().manual_seed(11)
    # fly/lucidrains: B 2, H 3, Nq 13, Nk 11, D 8, Dv 5, m 10 (one full and one partial block).
    b, h, nq, nk, d, dv, m, temp = 2, 3, 13, 11, 8, 5, 10, 0.3
    q, k, v = randn(b, nq, h, d, gen=gen), randn(b, nk, h, d, gen=gen), randn(b, nk, h, dv, gen=gen)
    torch.manual_seed(5)
    proj = gaussian_orthogonal_random_matrix(m, d, dtype=torch.float64)
    out.update(fly_q=to_port(q), fly_k=to_port(k), fly_v=to_port(v), fly_features=proj,
               fly_scale=torch.tensor([temp], dtype=torch.float64))
    for name, eps in (("fly_out_eps0", (0.0, 0.0)), ("fly_out_default_eps", (1e-4, 1e-6))):
        module = PerformerAttention(d, nb_features=m, softmax_temp=temp, softmax_eps=eps[0],
                                    normalization_eps=eps[1], dtype=torch.float64)
        module.projection_matrix.copy_(proj)
        out[name] = to_port(module(q, k, v)[0])

    # KDEformer Performer.py: iid W [B, H, d, m] per call, no stabiliser, no temperature.
    b, h, nq, d, dv, m = 2, 2, 9, 6, 4, 12
    q, v = randn(b, nq, h, d, gen=gen) * 0.6, randn(b, nq, h, dv, gen=gen)
    k = randn(b, nq, h, d, gen=gen) * 0.6
    torch.manual_seed(7)
    module = kdeformer_performer.PerformerAttention(num_feats=m)
    ref = module(q, k, v)
    torch.manual_seed(7)
    weights = torch.randn(b, h, d, m, dtype=torch.float64)
    feats = lambda x: torch.exp(torch.einsum("bhnd,bhdr->bhnr", to_port(x), weights)
                                - 0.5 * to_port(x).square().sum(-1, keepdim=True)) / math.sqrt(m)
    qf, kf = feats(q), feats(k)
    check = (qf @ (kf.transpose(2, 3) @ to_port(v))) / (qf @ kf.sum(2).unsqueeze(-1))
    assert (check - ref).abs().max() < 1e-12, "Performer.py drew other weights"
    out.update(ref_q=to_port(q), ref_k=to_port(k), ref_v=to_port(v),
               ref_features=weights.transpose(2, 3).contiguous(), ref_out=ref)


def scatterbrain_cases(out):
    from src.models.attention.sblocal_attention import SBLocalAttention

    gen = torch.Generator().manual_seed(12)
    cases = {  # name: B, H, Nq, Nk, D, Dv, w, m, temperature
        "even": (2, 2, 20, 20, 8, 5, 6, 8, 0.35),
        "odd": (1, 3, 13, 17, 6, 7, 5, 6, 0.5),
        "wide": (1, 2, 9, 9, 4, 3, 7, 12, 1.0),  # more features than D: two Haar blocks
    }
    for seed, (name, (b, h, nq, nk, d, dv, w, m, temp)) in enumerate(cases.items()):
        q, k, v = (randn(b, nq, h, d, gen=gen), randn(b, nk, h, d, gen=gen),
                   randn(b, nk, h, dv, gen=gen))
        torch.manual_seed(100 + seed)
        module = SBLocalAttention(w, d, nb_features=m, softmax_temp=temp, dtype=torch.float64)
        # The first forward draws the directions; drawing them here keeps them (redraw = π).
        module.feature_map.new_feature_map(q.device)
        features = module.feature_map.projection_matrix.clone()
        result = module(q, k, v)[0]
        out.update({f"{name}_q": to_port(q), f"{name}_k": to_port(k), f"{name}_v": to_port(v),
                    f"{name}_features": features, f"{name}_out": to_port(result),
                    f"{name}_config": torch.tensor([w, m], dtype=torch.int64),
                    f"{name}_scale": torch.tensor([temp], dtype=torch.float64)})
    # Check of the local_product stand-in: a band over every key is exact softmax attention.
    b, h, n, d = 1, 2, 10, 4
    q, k, v = randn(b, n, h, d, gen=gen), randn(b, n, h, d, gen=gen), randn(b, n, h, 3, gen=gen)
    module = SBLocalAttention(2 * n + 1, d, nb_features=8, softmax_temp=0.5, dtype=torch.float64)
    exact = torch.softmax(0.5 * torch.einsum("bthe,bshe->bhts", q, k), -1)
    exact = torch.einsum("bhts,bshd->bhtd", exact, v)
    assert (to_port(module(q, k, v)[0]) - exact).abs().max() < 1e-10


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fly", default="/work/.mirror/HazyResearch+fly/repo")
    parser.add_argument("--kdeformer", default="/work/.mirror/majid-daliri+kdeformer/repo")
    parser.add_argument("--out", default=os.path.join(ROOT, "tests/attention/fixtures"))
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    with tempfile.TemporaryDirectory() as tmp:
        for path in FLY_FILES:
            extract(args.fly, FLY_COMMIT, path, tmp)
        extract(args.kdeformer, KDEFORMER_COMMIT, "Performer.py", tmp)
        sys.path.insert(0, tmp)
        install_stubs()
        performer, scatterbrain = {}, {}
        performer_cases(performer)
        scatterbrain_cases(scatterbrain)
    os.makedirs(args.out, exist_ok=True)
    meta = {"generator": "tools/peer_fixtures/gen_performer_scatterbrain.py",
            "fly": f"HazyResearch/fly {FLY_COMMIT}",
            "kdeformer": f"majid-daliri/kdeformer {KDEFORMER_COMMIT}"}
    for name, tensors in (("performer", performer), ("scatterbrain", scatterbrain)):
        safetensors_io.save(os.path.join(args.out, f"{name}_parity.safetensors"), tensors, meta)
    for name, tensors in (("performer", performer), ("scatterbrain", scatterbrain)):
        print(name, {k: tuple(t.shape) for k, t in tensors.items()})


if __name__ == "__main__":
    main()
