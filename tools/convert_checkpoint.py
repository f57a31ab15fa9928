#!/usr/bin/python3
"""Convert a PyTorch checkpoint (T2T-ViT *.pth.tar, BigGAN pytorch_model.bin) to safetensors.

LibTorch 1.13 cannot read PyTorch state_dicts (models spec D.15), so kdeserve loads weights from
safetensors files. This tool is the one offline step between a published checkpoint and the
service: it loads the checkpoint with Debian's python3-torch, picks the state dict, and writes
every tensor under its original key name (no renaming, no spectral-norm folding; the C++ loaders
do that).

Runs with /usr/bin/python3 (Debian's python3-torch 1.13 + numpy); no other dependencies. The
safetensors format is written directly: an 8-byte little-endian u64 header length N, N bytes of
JSON header padded with spaces to a multiple of 8, then the raw little-endian tensor data, packed
without gaps, largest item size first (so every tensor is aligned to its item size), names sorted
within an item size.

Exit codes: 0 success, 2 any user-facing error (bad arguments, unreadable or unrecognised input,
refusal to overwrite), with a one-line message on stderr.
"""

import argparse
import hashlib
import inspect
import json
import os
import sys
import tempfile

CONVERTER_NAME = "kdeserve tools/convert_checkpoint.py"
CONVERTER_VERSION = "1"

# Wrapper keys that hold a state dict, in the order --state-dict auto tries them.
# Upstream T2T-ViT evaluates with use_ema=True and the released files hold only
# 'state_dict_ema' (models spec A.5), so auto prefers the EMA weights. 'model' is timm's
# key for a plain checkpoint; it is accepted as a plain state dict after 'state_dict'.
EMA_KEYS = ("state_dict_ema",)
PLAIN_KEYS = ("state_dict", "model")
TOP_LEVEL = "(top level)"

# Metadata keys the tool writes itself; --metadata cannot override them.
RESERVED_METADATA = (
    "format",
    "converter",
    "converter_version",
    "source_file",
    "source_sha256",
    "source_format",
    "state_dict",
    "stripped_prefix",
    "dtype",
)

MODULE_PREFIX = "module."

EPILOG = """\
examples:
  # T2T-ViT_t-24 (EMA weights, as upstream evaluates them):
  /usr/bin/python3 tools/convert_checkpoint.py 82.6_T2T_ViTt_24.pth.tar t2t_vit_t_24.safetensors

  # the non-EMA weights of a training checkpoint instead:
  /usr/bin/python3 tools/convert_checkpoint.py --state-dict plain ckpt.pth.tar plain.safetensors

  # BigGAN-deep-512 (keeps weight_orig/weight_u/weight_v and running stats):
  /usr/bin/python3 tools/convert_checkpoint.py biggan-deep-512-pytorch_model.bin \\
      biggan_deep_512.safetensors --metadata model=biggan-deep-512

  # half-precision copy, replacing an existing output:
  /usr/bin/python3 tools/convert_checkpoint.py --dtype f16 --force in.pth.tar out.safetensors

  # inspect keys, shapes and dtypes without writing anything:
  /usr/bin/python3 tools/convert_checkpoint.py --list 82.6_T2T_ViTt_24.pth.tar

Without OUTPUT, the output is INPUT with .pth.tar/.pth/.pt/.bin/.tar replaced by .safetensors.
Every output records in its __metadata__: source_file, source_sha256, source_format (zip or
legacy), state_dict (which dict was taken), stripped_prefix, dtype, converter, converter_version.
"""


class ConvertError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def warn(message):
    print("convert_checkpoint: warning: " + message, file=sys.stderr)


def info(message):
    print("convert_checkpoint: " + message, file=sys.stderr)


def import_torch():
    try:
        import numpy  # noqa: F401  (torch's .numpy() needs it)
        import torch
    except ImportError as e:
        raise ConvertError(
            "cannot import torch/numpy (%s); run with /usr/bin/python3 and install "
            "Debian's python3-torch (apt-get install python3-torch)" % e
        )
    return torch


# --- input -----------------------------------------------------------------------------------


def sniff_format(path):
    """'zip', 'legacy' or raises ConvertError with what the file looks like instead."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise ConvertError("cannot read %s: %s" % (path, e.strerror or e))
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    # Legacy torch.save: a pickle (protocol 2) whose first object is the magic number
    # 0x1950a86a20f9469cfc6c (LONG1 of 10 bytes).
    if head.startswith(b"\x80\x02\x8a\x0a"):
        return "legacy"
    if len(head) == 0:
        raise ConvertError("%s is empty, not a PyTorch checkpoint" % path)
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if 0 < n < 100_000_000 and head[8:9] == b"{":
            raise ConvertError("%s is already a safetensors file" % path)
    raise ConvertError(
        "%s is not a PyTorch checkpoint (expected a zip archive 'PK\\x03\\x04' or a legacy "
        "torch.save pickle '\\x80\\x02\\x8a\\x0a'; first bytes %r)" % (path, head[:8])
    )


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_checkpoint(torch, path, trust_pickle):
    kwargs = {"map_location": "cpu"}
    if not trust_pickle and "weights_only" in inspect.signature(torch.load).parameters:
        kwargs["weights_only"] = True
    try:
        return torch.load(path, **kwargs)
    except Exception as e:  # torch raises many types for corrupt input
        text = " ".join(str(e).split())
        if "WeightsUnpickler error:" in text:
            detail = text.split("WeightsUnpickler error:")[-1].strip()
            # The restricted unpickler rejects classes, globals and (in torch 1.13) even
            # floats with "Unsupported ..."; anything else (EOF, bad data) is a corrupt file.
            if detail.startswith("Unsupported"):
                if "operand" in detail:
                    detail += (": torch 1.13 rejects even plain Python floats, such as a "
                               "learning rate")
                raise ConvertError(
                    "%s holds objects the restricted (weights_only) unpickler of torch %s does "
                    "not allow (%s); if you trust the file, rerun with --trust-pickle (full "
                    "unpickling can run arbitrary code)" % (path, torch.__version__, detail)
                )
            raise ConvertError("cannot load %s as a PyTorch checkpoint: %s" % (path, detail[:300]))
        raise ConvertError(
            "cannot load %s as a PyTorch checkpoint: %s: %s" % (path, type(e).__name__, text[:300])
        )


def is_tensor_map(torch, obj):
    return isinstance(obj, dict) and any(isinstance(v, torch.Tensor) for v in obj.values())


def select_state_dict(torch, checkpoint, choice):
    """Returns (state_dict, which) where which names the dict that was taken."""
    if not isinstance(checkpoint, dict):
        raise ConvertError(
            "the checkpoint is a %s, not a dict (expected a state dict or a dict holding "
            "'state_dict_ema' / 'state_dict')" % type(checkpoint).__name__
        )
    ema = [k for k in EMA_KEYS if isinstance(checkpoint.get(k), dict)]
    plain = [k for k in PLAIN_KEYS if isinstance(checkpoint.get(k), dict)]
    bare = not ema and not plain and is_tensor_map(torch, checkpoint)
    top_keys = ", ".join(repr(k) for k in list(checkpoint)[:10])

    if choice == "ema":
        if not ema:
            raise ConvertError(
                "--state-dict ema: the checkpoint has no 'state_dict_ema' (top-level keys: %s)"
                % top_keys
            )
        key = ema[0]
    elif choice == "plain":
        if plain:
            key = plain[0]
        elif bare:
            key = None
        else:
            raise ConvertError(
                "--state-dict plain: the checkpoint has no 'state_dict' (top-level keys: %s)"
                % top_keys
            )
    else:
        if ema:
            key = ema[0]
        elif plain:
            key = plain[0]
        elif bare:
            key = None
        else:
            raise ConvertError(
                "unknown checkpoint layout: no 'state_dict_ema', 'state_dict' or 'model' and no "
                "tensors at the top level (top-level keys: %s)" % (top_keys or "none")
            )
    if key is None:
        return checkpoint, TOP_LEVEL
    others = [k for k in ema + plain if k != key]
    if others:
        info("taking %r (also present: %s)" % (key, ", ".join(repr(k) for k in others)))
    return checkpoint[key], key


# --- tensors ---------------------------------------------------------------------------------


def safetensors_dtypes(torch):
    return {
        torch.float64: "F64",
        torch.float32: "F32",
        torch.float16: "F16",
        torch.bfloat16: "BF16",
        torch.int64: "I64",
        torch.int32: "I32",
        torch.int16: "I16",
        torch.int8: "I8",
        torch.uint8: "U8",
        torch.bool: "BOOL",
    }


def collect_tensors(torch, state_dict, dtype_option):
    """Returns ({name: contiguous CPU tensor}, stripped_prefix); warns about skipped entries."""
    target = {
        "keep": None,
        "f32": torch.float32,
        "f16": torch.float16,
        "bf16": torch.bfloat16,
    }[dtype_option]
    names = safetensors_dtypes(torch)
    tensors = {}
    for name, value in state_dict.items():
        if not isinstance(name, str):
            warn("skipping entry with non-string key %r (%s)" % (name, type(value).__name__))
            continue
        if not isinstance(value, torch.Tensor):
            warn("skipping non-tensor entry %r (%s)" % (name, type(value).__name__))
            continue
        if name == "__metadata__":
            raise ConvertError("the key '__metadata__' is reserved by safetensors")
        t = value.detach()
        if t.layout != torch.strided or t.is_quantized:
            raise ConvertError("tensor %r has layout %s; only dense tensors can be stored"
                               % (name, t.layout))
        if target is not None and t.is_floating_point():
            t = t.to(target)
        if t.dtype not in names:
            raise ConvertError("tensor %r has dtype %s, which safetensors cannot store here "
                               "(supported: F32, F64, F16, BF16, I64, I32, I16, I8, U8, BOOL)"
                               % (name, t.dtype))
        tensors[name] = t.cpu().resolve_conj().resolve_neg().contiguous()
    if not tensors:
        raise ConvertError("the selected state dict holds no tensors")

    stripped = ""
    with_prefix = [n for n in tensors if n.startswith(MODULE_PREFIX)]
    if with_prefix and len(with_prefix) == len(tensors):
        stripped = MODULE_PREFIX
        tensors = {n[len(MODULE_PREFIX):]: t for n, t in tensors.items()}
        info("stripped the DataParallel prefix %r from all %d keys" % (MODULE_PREFIX, len(tensors)))
    elif with_prefix:
        warn("%d of %d keys start with %r; not all do, so the keys are kept as they are"
             % (len(with_prefix), len(tensors), MODULE_PREFIX))
    return tensors, stripped


def tensor_bytes(torch, t):
    """The raw little-endian bytes of a contiguous CPU tensor."""
    if t.numel() == 0:
        return b""
    flat = t.reshape(-1)
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: same bits as int16
        flat = flat.view(torch.int16)
    arr = flat.numpy()
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and sys.byteorder == "big"):
        arr = arr.byteswap()
    return arr.tobytes()


def build_header(torch, tensors, metadata):
    """Returns (header bytes padded to a multiple of 8, [names in data order])."""
    names = safetensors_dtypes(torch)
    order = sorted(tensors, key=lambda n: (-tensors[n].element_size(), n))
    header = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name in order:
        t = tensors[name]
        nbytes = t.numel() * t.element_size()
        header[name] = {
            "dtype": names[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    return text, order


def write_safetensors(torch, path, tensors, metadata):
    """Writes atomically: a temporary file next to `path`, then a rename."""
    header, order = build_header(torch, tensors, metadata)
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(len(header).to_bytes(8, "little"))
            f.write(header)
            for name in order:
                f.write(tensor_bytes(torch, tensors[name]))
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


# --- command line ----------------------------------------------------------------------------


def default_output(path):
    base = path
    for suffix in (".pth.tar", ".pth", ".pt", ".bin", ".tar", ".ckpt"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base + ".safetensors"


def parse_metadata(items):
    metadata = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConvertError("--metadata expects KEY=VALUE, got %r" % item)
        if key in RESERVED_METADATA:
            raise ConvertError("--metadata %s: the key %r is recorded by the converter itself"
                               % (item, key))
        metadata[key] = value
    return metadata


def make_parser():
    p = argparse.ArgumentParser(
        prog="convert_checkpoint.py",
        description="Convert a T2T-ViT .pth.tar or a BigGAN pytorch_model.bin (zip or legacy "
        "torch.save format) to a safetensors file for kdeserve. Keys are kept as they are "
        "(only a DataParallel 'module.' prefix on every key is stripped).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", help="the checkpoint (.pth.tar, .pth, pytorch_model.bin, ...)")
    p.add_argument("output", nargs="?", help="the .safetensors file to write "
                   "(default: derived from INPUT)")
    p.add_argument("--state-dict", choices=("auto", "ema", "plain"), default="auto",
                   help="which state dict to take: 'ema' = 'state_dict_ema', 'plain' = "
                   "'state_dict' (or 'model', or a bare state dict); 'auto' (default) prefers "
                   "'state_dict_ema', as upstream T2T-ViT evaluates, then 'state_dict', then "
                   "'model', then the top level")
    p.add_argument("--dtype", choices=("keep", "f32", "f16", "bf16"), default="keep",
                   help="convert floating-point tensors (integer/bool tensors are never "
                   "converted); default: keep")
    p.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                   help="extra __metadata__ entry (repeatable)")
    p.add_argument("--list", action="store_true",
                   help="print name, dtype and shape of every tensor (after --state-dict, "
                   "prefix stripping and --dtype) and write nothing")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load with full unpickling (weights_only=False); only for files from a "
                   "trusted source, needed when a checkpoint stores non-tensor objects")
    return p


def run(args):
    output = args.output or default_output(args.input)
    extra_metadata = parse_metadata(args.metadata)
    if not args.list:
        if os.path.abspath(output) == os.path.abspath(args.input):
            raise ConvertError("OUTPUT must differ from INPUT (%s)" % output)
        if os.path.exists(output) and not args.force:
            raise ConvertError("%s exists; pass --force to overwrite it" % output)
        out_dir = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(out_dir):
            raise ConvertError("the output folder %s does not exist" % out_dir)
    if not os.path.isfile(args.input):
        raise ConvertError("cannot read %s: %s" % (
            args.input, "not a regular file" if os.path.exists(args.input) else "no such file"))
    source_format = sniff_format(args.input)

    torch = import_torch()
    checkpoint = load_checkpoint(torch, args.input, args.trust_pickle)
    state_dict, which = select_state_dict(torch, checkpoint, args.state_dict)
    tensors, stripped = collect_tensors(torch, state_dict, args.dtype)
    numel = sum(t.numel() for t in tensors.values())
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())

    if args.list:
        print("# %s: %s format, state dict %s, %d tensors, %d elements, %d bytes%s"
              % (os.path.basename(args.input), source_format, which, len(tensors), numel, nbytes,
                 ", stripped prefix %r" % stripped if stripped else ""))
        dtypes = safetensors_dtypes(torch)
        for name in sorted(tensors):
            t = tensors[name]
            print("%s\t%s\t[%s]" % (name, dtypes[t.dtype], ",".join(str(s) for s in t.shape)))
        return 0

    metadata = {
        "format": "pt",
        "converter": CONVERTER_NAME,
        "converter_version": CONVERTER_VERSION,
        "source_file": os.path.basename(args.input),
        "source_sha256": sha256_of(args.input),
        "source_format": source_format,
        "state_dict": which,
        "stripped_prefix": stripped,
        "dtype": args.dtype,
    }
    metadata.update(extra_metadata)
    try:
        write_safetensors(torch, output, tensors, metadata)
    except OSError as e:
        raise ConvertError("cannot write %s: %s" % (output, e.strerror or e))
    info("wrote %s: %d tensors, %d elements, %d data bytes (state dict %s, dtype %s)"
         % (output, len(tensors), numel, nbytes, which, args.dtype))
    return 0


def main(argv=None):
    args = make_parser().parse_args(argv)
    try:
        return run(args)
    except ConvertError as e:
        print("convert_checkpoint: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
