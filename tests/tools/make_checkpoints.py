#!/usr/bin/python3
"""Writes two small checkpoints with known values for convert_load_test (C++).

  make_checkpoints.py DIR

Exits with 77 when torch or numpy cannot be imported.

DIR/t2t_like.pth.tar   zip format: {"state_dict_ema": EMA, "state_dict": PLAIN, "epoch": 3}
DIR/biggan_like.bin    legacy (pre-zip) format: a bare OrderedDict from spectral-normed modules
                       (weight_orig / weight_u / weight_v) plus running statistics

Every tensor of shape S holds start + step * arange(numel(S)), row-major in S. The PLAIN dict of
t2t_like holds the negated values, so a test can tell which dict was converted. The tables below
are repeated in convert_load_test.cpp; change both together.
"""

import collections
import os
import sys

# Exit status when python3-torch is missing; convert_load_test skips on it.
NO_TORCH = 77

try:
    import numpy  # noqa: F401  (the converter needs it too)
    import torch
except ImportError as e:
    print("make_checkpoints.py: cannot import torch/numpy: %s" % e, file=sys.stderr)
    sys.exit(NO_TORCH)

# name, shape, dtype, start, step (T2T-like; EMA values; PLAIN = -EMA).
T2T = [
    ("cls_token", [1, 1, 8], torch.float32, 0.5, 0.25),
    ("pos_embed", [1, 5, 8], torch.float32, 1.0, 0.5),
    ("blocks.0.attn.qkv.weight", [24, 8], torch.float32, -3.0, 0.125),  # saved non-contiguous
    ("head.weight", [10, 8], torch.float16, -2.0, 0.125),
    ("head.bias", [10], torch.float32, 0.0, 1.0),
]

# name, shape, start, step (BigGAN-like; all float32).
BIGGAN = [
    ("embeddings.weight", [4, 10], 0.0, 0.5),
    ("generator.gen_z.bias", [16], 1.0, 0.25),
    ("generator.gen_z.weight_orig", [16, 4], -8.0, 0.25),
    ("generator.gen_z.weight_u", [16], 0.5, -0.125),
    ("generator.gen_z.weight_v", [4], 2.0, 1.0),
    ("generator.layers.0.bn_0.running_means", [3, 4], -1.0, 0.5),
    ("generator.layers.0.bn_0.running_vars", [3, 4], 1.0, 0.25),
    ("generator.layers.8.gamma", [1], 0.75, 0.0),
    ("generator.conv_to_rgb.bias", [3], 3.0, -1.0),
    ("generator.conv_to_rgb.weight_orig", [3, 4, 3, 3], -27.0, 0.5),
    ("generator.conv_to_rgb.weight_u", [3], 0.0, 2.0),
    ("generator.conv_to_rgb.weight_v", [36], 5.0, -0.25),
]


def values(shape, dtype, start, step):
    n = 1
    for s in shape:
        n *= s
    return (start + step * torch.arange(n, dtype=torch.float64)).reshape(shape).to(dtype)


def t2t_state_dict(sign):
    sd = collections.OrderedDict()
    for name, shape, dtype, start, step in T2T:
        t = values(shape, dtype, sign * start, sign * step)
        if name == "blocks.0.attn.qkv.weight":
            t = t.t().contiguous().t()  # same values, column-major storage
            assert not t.is_contiguous()
        sd[name] = t
    return sd


class BatchNormStats(torch.nn.Module):
    def __init__(self, n_stats, channels):
        super().__init__()
        self.register_buffer("running_means", torch.zeros(n_stats, channels))
        self.register_buffer("running_vars", torch.ones(n_stats, channels))


def biggan_state_dict():
    sn = torch.nn.utils.spectral_norm
    model = torch.nn.Module()
    model.embeddings = torch.nn.Linear(10, 4, bias=False)
    gen = torch.nn.Module()
    gen.gen_z = sn(torch.nn.Linear(4, 16))
    layers = torch.nn.ModuleDict()
    block = torch.nn.Module()
    block.bn_0 = BatchNormStats(3, 4)
    layers["0"] = block
    attn = torch.nn.Module()
    attn.gamma = torch.nn.Parameter(torch.zeros(1))
    layers["8"] = attn
    gen.layers = layers
    gen.conv_to_rgb = sn(torch.nn.Conv2d(4, 3, 3, padding=1))
    model.generator = gen

    sd = model.state_dict()
    expected = {name for name, _, _, _ in BIGGAN}
    assert set(sd) == expected, sorted(set(sd) ^ expected)
    for name, shape, start, step in BIGGAN:
        assert list(sd[name].shape) == shape, (name, sd[name].shape)
        sd[name].copy_(values(shape, torch.float32, start, step))
    return sd


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[1]
    os.makedirs(out, exist_ok=True)
    torch.save(
        {"state_dict_ema": t2t_state_dict(1.0), "state_dict": t2t_state_dict(-1.0), "epoch": 3},
        os.path.join(out, "t2t_like.pth.tar"),
    )
    torch.save(biggan_state_dict(), os.path.join(out, "biggan_like.bin"),
               _use_new_zipfile_serialization=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
