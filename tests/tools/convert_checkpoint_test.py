#!/usr/bin/python3
"""Unit tests of tools/convert_checkpoint.py (run with /usr/bin/python3; needs python3-torch).

The converted files are read back by an independent safetensors parser below, which also checks
the layout rules the C++ reader relies on: header padded to 8 bytes, tensors packed without gaps,
largest item size first, every tensor aligned to its item size.
"""

import argparse
import collections
import contextlib
import hashlib
import importlib.util
import io
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import unittest

REPO = pathlib.Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "convert_checkpoint.py"

try:
    import numpy as np
    import torch

    HAVE_TORCH = True
except ImportError:  # pragma: no cover - reported as skips
    HAVE_TORCH = False


def load_tool():
    spec = importlib.util.spec_from_file_location("convert_checkpoint", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ST_DTYPES = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": (None, 2),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1),
    "U8": ("uint8", 1), "BOOL": ("bool", 1),
}


def read_safetensors(test, path):
    """Parses `path` independently of the tool; returns (tensors, metadata, header)."""
    data = pathlib.Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    test.assertEqual(n % 8, 0, "header length must be a multiple of 8")
    raw = data[8:8 + n]
    test.assertEqual(raw, raw.rstrip(b" ") + b" " * (len(raw) - len(raw.rstrip(b" "))))
    header = json.loads(raw.decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    for k, v in metadata.items():
        test.assertIsInstance(k, str)
        test.assertIsInstance(v, str)
    body = data[8 + n:]
    entries = sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"]))
    offset = 0
    previous_size = None
    tensors = {}
    for name, entry in entries:
        dtype, size = ST_DTYPES[entry["dtype"]]
        begin, end = entry["data_offsets"]
        test.assertEqual(begin, offset, "%s: tensors must be packed without gaps" % name)
        test.assertEqual(begin % size, 0, "%s: not aligned to its item size" % name)
        numel = 1
        for s in entry["shape"]:
            numel *= s
        test.assertEqual(end - begin, numel * size, name)
        if previous_size is not None and numel > 0:
            test.assertLessEqual(size, previous_size, "largest item size must come first")
        if numel > 0:
            previous_size = size
        chunk = body[begin:end]
        if dtype is None:  # BF16: the upper 16 bits of a float32
            bits = np.frombuffer(chunk, dtype="<u2").astype("<u4") << 16
            t = torch.from_numpy(bits.view("<f4").copy()).to(torch.bfloat16)
        else:
            t = torch.from_numpy(np.frombuffer(chunk, dtype=np.dtype(dtype).newbyteorder("<"))
                                 .astype(dtype).copy())
        tensors[name] = t.reshape(entry["shape"])
        offset = end
    test.assertEqual(offset, len(body), "data region must end with the last tensor")
    return tensors, metadata, header


def arange(shape, dtype=None, start=0.0, step=1.0):
    n = 1
    for s in shape:
        n *= s
    t = (start + step * torch.arange(n, dtype=torch.float64)).reshape(shape)
    return t.to(dtype or torch.float32)


@unittest.skipUnless(HAVE_TORCH, "/usr/bin/python3 cannot import torch/numpy "
                     "(apt-get install python3-torch)")
class ConvertCheckpointTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tool = load_tool()

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="convert_checkpoint_test.")
        self.dir = pathlib.Path(self._tmp.name)

    def tearDown(self):
        self._tmp.cleanup()

    # helpers ------------------------------------------------------------------------------

    def path(self, name):
        return str(self.dir / name)

    def save(self, obj, name, legacy=False):
        path = self.path(name)
        if legacy:
            torch.save(obj, path, _use_new_zipfile_serialization=False)
        else:
            torch.save(obj, path)
        return path

    def convert(self, *argv):
        """Runs the tool in-process; returns (exit code, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = self.tool.main([str(a) for a in argv])
            except SystemExit as e:  # argparse
                code = e.code
        return code, out.getvalue(), err.getvalue()

    def convert_ok(self, *argv):
        code, out, err = self.convert(*argv)
        self.assertEqual(code, 0, err)
        return out, err

    def convert_fails(self, *argv, message):
        code, out, err = self.convert(*argv)
        self.assertEqual(code, 2, "expected exit code 2; stderr: " + err)
        self.assertIn(message, err)
        self.assertIn("error:", err)
        return err

    def assertTensorsEqual(self, got, expected):
        self.assertEqual(sorted(got), sorted(expected))
        for name, want in expected.items():
            self.assertEqual(got[name].dtype, want.dtype, name)
            self.assertEqual(list(got[name].shape), list(want.shape), name)
            self.assertTrue(torch.equal(got[name], want.contiguous()), name)

    @staticmethod
    def t2t_dict(sign=1.0):
        return collections.OrderedDict([
            ("cls_token", arange([1, 1, 8], start=sign * 0.5, step=sign * 0.25)),
            ("pos_embed", arange([1, 5, 8], start=sign, step=sign * 0.5)),
            ("blocks.0.attn.qkv.weight", arange([8, 24], start=-sign, step=sign).t()),
            ("head.weight", arange([10, 8], torch.float16, start=sign * -2, step=sign * 0.125)),
        ])

    # the command line ---------------------------------------------------------------------

    def test_help_has_examples_and_runs_as_a_script(self):
        result = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True,
                                text=True, check=False)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("examples:", result.stdout)
        self.assertIn("--state-dict", result.stdout)
        self.assertIn("pytorch_model.bin", result.stdout)

    def test_missing_input_exits_2_as_a_script(self):
        result = subprocess.run([sys.executable, str(TOOL), self.path("nope.pth.tar"),
                                 self.path("out.safetensors")],
                                capture_output=True, text=True, check=False)
        self.assertEqual(result.returncode, 2)
        self.assertIn("no such file", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_bad_option_exits_2(self):
        src = self.save(self.t2t_dict(), "a.pth")
        code, _, err = self.convert("--dtype", "f8", src)
        self.assertEqual(code, 2)
        self.assertIn("invalid choice", err)

    # state dict selection -----------------------------------------------------------------

    def test_auto_prefers_ema_and_plain_takes_state_dict(self):
        src = self.save({"state_dict_ema": self.t2t_dict(1), "state_dict": self.t2t_dict(-1),
                         "epoch": 3}, "ckpt.pth.tar")
        self.convert_ok(src, self.path("auto.safetensors"))
        tensors, meta, _ = read_safetensors(self, self.path("auto.safetensors"))
        self.assertTensorsEqual(tensors, self.t2t_dict(1))
        self.assertEqual(meta["state_dict"], "state_dict_ema")

        self.convert_ok("--state-dict", "plain", src, self.path("plain.safetensors"))
        tensors, meta, _ = read_safetensors(self, self.path("plain.safetensors"))
        self.assertTensorsEqual(tensors, self.t2t_dict(-1))
        self.assertEqual(meta["state_dict"], "state_dict")

        self.convert_ok("--state-dict", "ema", src, self.path("ema.safetensors"))
        tensors, _, _ = read_safetensors(self, self.path("ema.safetensors"))
        self.assertTensorsEqual(tensors, self.t2t_dict(1))

    def test_released_layout_single_ema_entry(self):
        # The released T2T-ViT files hold only 'state_dict_ema' (models spec A.5).
        src = self.save({"state_dict_ema": self.t2t_dict()}, "82.6_T2T_ViTt_24.pth.tar",
                        legacy=True)
        self.convert_ok(src)  # default output name
        out = self.path("82.6_T2T_ViTt_24.safetensors")
        tensors, meta, _ = read_safetensors(self, out)
        self.assertTensorsEqual(tensors, self.t2t_dict())
        self.assertEqual(meta["source_format"], "legacy")
        self.convert_fails("--state-dict", "plain", src, self.path("x.safetensors"),
                           message="no 'state_dict'")

    def test_state_dict_only_and_timm_model_key(self):
        src = self.save({"state_dict": self.t2t_dict(), "optimizer": {"step": 10}}, "sd.pth.tar")
        self.convert_ok(src, self.path("a.safetensors"))
        tensors, meta, _ = read_safetensors(self, self.path("a.safetensors"))
        self.assertTensorsEqual(tensors, self.t2t_dict())
        self.assertEqual(meta["state_dict"], "state_dict")
        self.convert_fails("--state-dict", "ema", src, self.path("b.safetensors"),
                           message="no 'state_dict_ema'")

        src = self.save({"model": self.t2t_dict(), "epoch": 1}, "timm.pth.tar")
        self.convert_ok(src, self.path("c.safetensors"))
        _, meta, _ = read_safetensors(self, self.path("c.safetensors"))
        self.assertEqual(meta["state_dict"], "model")

    def test_bare_legacy_biggan_keeps_every_key(self):
        model = torch.nn.Module()
        model.gen_z = torch.nn.utils.spectral_norm(torch.nn.Linear(4, 16))
        model.bn = torch.nn.BatchNorm1d(4)
        sd = model.state_dict()
        self.assertTrue(hasattr(sd, "_metadata"))
        for i, t in enumerate(sd.values()):
            if t.is_floating_point():
                t.copy_(arange(list(t.shape), start=i, step=0.5))
        src = self.save(sd, "pytorch_model.bin", legacy=True)
        self.convert_ok(src, self.path("biggan.safetensors"))
        tensors, meta, _ = read_safetensors(self, self.path("biggan.safetensors"))
        self.assertTensorsEqual(tensors, dict(sd))
        for key in ("gen_z.weight_orig", "gen_z.weight_u", "gen_z.weight_v", "gen_z.bias",
                    "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"):
            self.assertIn(key, tensors)
        self.assertEqual(tensors["bn.num_batches_tracked"].dtype, torch.int64)
        self.assertEqual(meta["state_dict"], "(top level)")
        self.assertEqual(meta["source_format"], "legacy")
        self.assertEqual(meta["source_file"], "pytorch_model.bin")

    # keys ---------------------------------------------------------------------------------

    def test_module_prefix_is_stripped_and_reported(self):
        sd = {"module." + k: v for k, v in self.t2t_dict().items()}
        src = self.save({"state_dict_ema": sd}, "dp.pth.tar")
        _, err = self.convert_ok(src, self.path("dp.safetensors"))
        self.assertIn("stripped the DataParallel prefix", err)
        tensors, meta, _ = read_safetensors(self, self.path("dp.safetensors"))
        self.assertTensorsEqual(tensors, self.t2t_dict())
        self.assertEqual(meta["stripped_prefix"], "module.")

    def test_partial_module_prefix_is_kept_with_a_warning(self):
        sd = {"module.a": torch.ones(2), "b": torch.zeros(3)}
        src = self.save(sd, "partial.pth")
        _, err = self.convert_ok(src, self.path("p.safetensors"))
        self.assertIn("warning", err)
        tensors, meta, _ = read_safetensors(self, self.path("p.safetensors"))
        self.assertEqual(sorted(tensors), ["b", "module.a"])
        self.assertEqual(meta["stripped_prefix"], "")

    def test_non_tensor_entries_are_skipped_with_a_warning(self):
        sd = collections.OrderedDict([("w", torch.ones(2, 2)), ("step", 7), ("name", "x"),
                                      ("nested", {"a": torch.ones(1)})])
        src = self.save(sd, "mixed.pth")
        _, err = self.convert_ok(src, self.path("m.safetensors"))
        for key in ("'step'", "'name'", "'nested'"):
            self.assertIn("skipping non-tensor entry " + key, err)
        tensors, _, _ = read_safetensors(self, self.path("m.safetensors"))
        self.assertEqual(sorted(tensors), ["w"])

    # tensors and layout -------------------------------------------------------------------

    def test_layout_noncontiguous_scalar_empty_and_all_dtypes(self):
        base = arange([6, 4], torch.float64)
        sd = collections.OrderedDict([
            ("transposed", base.t()),
            ("sliced", arange([5, 6])[:, ::2]),
            ("expanded", torch.tensor([1.5, 2.5]).expand(3, 2)),
            ("negative_view", torch.arange(4.0).neg()),
            ("scalar", torch.tensor(3.25)),
            ("empty", torch.zeros(0, 3)),
            ("f16", arange([3], torch.float16, start=0.5)),
            ("bf16", arange([3], torch.bfloat16, start=-1.0)),
            ("i64", torch.arange(5)),
            ("i32", torch.arange(3, dtype=torch.int32)),
            ("i16", torch.arange(3, dtype=torch.int16)),
            ("i8", torch.arange(-3, 0, dtype=torch.int8)),
            ("u8", torch.arange(250, 253, dtype=torch.uint8)),
            ("flag", torch.tensor([True, False, True])),
        ])
        src = self.save(sd, "layout.pth")
        self.convert_ok(src, self.path("layout.safetensors"))
        tensors, _, header = read_safetensors(self, self.path("layout.safetensors"))
        self.assertTensorsEqual(tensors, {k: v.contiguous() for k, v in sd.items()})
        self.assertEqual(header["scalar"]["shape"], [])
        self.assertEqual(header["empty"]["data_offsets"][0], header["empty"]["data_offsets"][1])
        self.assertEqual(header["bf16"]["dtype"], "BF16")
        self.assertEqual(header["flag"]["dtype"], "BOOL")

    def test_dtype_options_convert_only_floating_tensors(self):
        sd = {"w": arange([4, 3], start=0.1, step=0.37), "d": arange([2], torch.float64),
              "h": arange([2], torch.float16), "n": torch.arange(3), "m": torch.tensor([True])}
        src = self.save(sd, "dt.pth")
        for option, dtype in (("f32", torch.float32), ("f16", torch.float16),
                              ("bf16", torch.bfloat16)):
            out = self.path(option + ".safetensors")
            self.convert_ok("--dtype", option, src, out)
            tensors, meta, _ = read_safetensors(self, out)
            self.assertEqual(meta["dtype"], option)
            for name in ("w", "d", "h"):
                self.assertEqual(tensors[name].dtype, dtype, name)
                self.assertTrue(torch.equal(tensors[name], sd[name].to(dtype)), name)
            self.assertEqual(tensors["n"].dtype, torch.int64)
            self.assertEqual(tensors["m"].dtype, torch.bool)
        self.convert_ok(src, self.path("keep.safetensors"))
        tensors, meta, _ = read_safetensors(self, self.path("keep.safetensors"))
        self.assertEqual(meta["dtype"], "keep")
        self.assertTensorsEqual(tensors, sd)

    def test_unsupported_dtype_fails_and_writes_nothing(self):
        src = self.save({"c": torch.ones(2, dtype=torch.complex64), "w": torch.ones(2)}, "c.pth")
        self.convert_fails(src, self.path("c.safetensors"), message="complex64")
        self.assertEqual(sorted(os.listdir(self.dir)), ["c.pth"])

    # metadata -----------------------------------------------------------------------------

    def test_metadata_records_provenance_and_user_entries(self):
        src = self.save({"state_dict_ema": self.t2t_dict()}, "m.pth.tar")
        self.convert_ok(src, self.path("m.safetensors"), "--metadata", "model=t2t_vit_t_24",
                        "--metadata", "note=a=b")
        _, meta, _ = read_safetensors(self, self.path("m.safetensors"))
        self.assertEqual(meta["source_file"], "m.pth.tar")
        self.assertEqual(meta["source_sha256"],
                         hashlib.sha256(pathlib.Path(src).read_bytes()).hexdigest())
        self.assertEqual(meta["source_format"], "zip")
        self.assertEqual(meta["converter_version"], self.tool.CONVERTER_VERSION)
        self.assertIn("convert_checkpoint.py", meta["converter"])
        self.assertEqual(meta["state_dict"], "state_dict_ema")
        self.assertEqual(meta["model"], "t2t_vit_t_24")
        self.assertEqual(meta["note"], "a=b")
        self.convert_fails(src, self.path("x.safetensors"), "--metadata", "novalue",
                           message="KEY=VALUE")
        self.convert_fails(src, self.path("x.safetensors"), "--metadata", "source_sha256=0",
                           message="recorded by the converter")

    # output handling ----------------------------------------------------------------------

    def test_refuses_to_overwrite_without_force(self):
        src = self.save({"state_dict": self.t2t_dict()}, "o.pth.tar")
        out = self.path("o.safetensors")
        pathlib.Path(out).write_bytes(b"precious")
        self.convert_fails(src, out, message="--force")
        self.assertEqual(pathlib.Path(out).read_bytes(), b"precious")
        self.convert_ok("--force", src, out)
        tensors, _, _ = read_safetensors(self, out)
        self.assertTensorsEqual(tensors, self.t2t_dict())
        self.assertEqual(sorted(os.listdir(self.dir)), ["o.pth.tar", "o.safetensors"])
        self.convert_fails("--force", src, src, message="must differ")

    def test_list_prints_keys_and_writes_nothing(self):
        src = self.save({"state_dict_ema": self.t2t_dict()}, "l.pth.tar")
        out, _ = self.convert_ok("--list", src)
        self.assertIn("blocks.0.attn.qkv.weight\tF32\t[24,8]", out)
        self.assertIn("head.weight\tF16\t[10,8]", out)
        self.assertIn("4 tensors", out)
        out, _ = self.convert_ok("--list", "--dtype", "bf16", src)
        self.assertIn("head.weight\tBF16\t[10,8]", out)
        self.assertEqual(os.listdir(self.dir), ["l.pth.tar"])

    def test_default_output_names(self):
        self.assertEqual(self.tool.default_output("a/82.6_T2T_ViTt_24.pth.tar"),
                         "a/82.6_T2T_ViTt_24.safetensors")
        self.assertEqual(self.tool.default_output("pytorch_model.bin"),
                         "pytorch_model.safetensors")
        self.assertEqual(self.tool.default_output("weights"), "weights.safetensors")

    # bad input ----------------------------------------------------------------------------

    def test_unreadable_and_unknown_inputs_exit_2(self):
        out = self.path("out.safetensors")
        self.convert_fails(self.path("missing.pth"), out, message="no such file")
        self.convert_fails(str(self.dir), out, message="not a regular file")
        empty = self.path("empty.pth")
        pathlib.Path(empty).write_bytes(b"")
        self.convert_fails(empty, out, message="is empty")
        text = self.path("config.json")
        pathlib.Path(text).write_text('{"z_dim": 128}\n')
        self.convert_fails(text, out, message="not a PyTorch checkpoint")

        good = pathlib.Path(self.save({"state_dict": self.t2t_dict()}, "good.pth")).read_bytes()
        truncated = self.path("truncated.pth")
        pathlib.Path(truncated).write_bytes(good[: len(good) // 2])
        self.convert_fails(truncated, out, message="cannot load")
        legacy = pathlib.Path(self.save(self.t2t_dict(), "l.bin", legacy=True)).read_bytes()
        pathlib.Path(truncated).write_bytes(legacy[: len(legacy) // 2])
        self.convert_fails(truncated, out, message="cannot load")

        self.convert_ok(self.path("good.pth"), self.path("good.safetensors"))
        self.convert_fails(self.path("good.safetensors"), out, message="already a safetensors")

        self.convert_fails(self.save([torch.ones(1)], "list.pth"), out, message="not a dict")
        self.convert_fails(self.save({"epoch": 3, "arch": "t2t"}, "noweights.pth"), out,
                           message="unknown checkpoint layout")
        self.convert_fails(self.save({"state_dict": {"epoch": 1}}, "nots.pth"), out,
                           message="holds no tensors")
        self.assertFalse(os.path.exists(out))

    def test_arbitrary_objects_need_trust_pickle(self):
        src = self.save({"state_dict": self.t2t_dict(), "args": argparse.Namespace(lr=0.1)},
                        "args.pth.tar")
        out = self.path("args.safetensors")
        self.convert_fails(src, out, message="--trust-pickle")
        self.convert_ok("--trust-pickle", src, out)
        tensors, _, _ = read_safetensors(self, out)
        self.assertTensorsEqual(tensors, self.t2t_dict())


if __name__ == "__main__":
    unittest.main()
