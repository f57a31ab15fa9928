"""Steps shared by the parity-fixture generators that run one reference from a bare mirror:
reading the reference files at a commit into a temporary directory at run time (they are never
copied into this repository), importing them there, the command line (--mirror, --out) and the
case loop with its metadata."""
import argparse
import importlib
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

FIXTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests",
                           "attention", "fixtures")


def git_show(mirror, commit, path):
    """The bytes of `path` at `commit` in the bare repository `mirror`."""
    return subprocess.check_output(["git", "-C", mirror, "show", f"{commit}:{path}"])


def write(directory, name, content):
    """Writes `content` (bytes, or str for a run-time stub) to directory/name."""
    with open(os.path.join(directory, name), "wb" if isinstance(content, bytes) else "w") as f:
        f.write(content)


def import_from(directory, module):
    """Imports `module` (dotted) with `directory` first on the path."""
    sys.path.insert(0, directory)
    return importlib.import_module(module)


def parse_args(default_mirror, fixture):
    """--mirror (default `default_mirror`), --out (default tests/attention/fixtures/`fixture`)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--mirror", default=default_mirror)
    parser.add_argument("--out", default=os.path.join(FIXTURE_DIR, fixture))
    return parser.parse_args()


def run_cases(mirror, extract, run_case, cases, seed):
    """ref = extract(mirror, tmp) in a temporary directory, then run_case(ref, case, gen) for
    every case with one torch generator seeded `seed`. → {name: tensor} of all cases."""
    with tempfile.TemporaryDirectory() as tmp:
        ref = extract(mirror, tmp)
        gen = torch.Generator().manual_seed(seed)
        tensors = {}
        for case in cases:
            tensors.update(run_case(ref, case, gen))
    return tensors


def save(out, tensors, reference, cases, case_fields, **extra):
    """Writes the fixture with metadata reference, cases ("a,b,…;…"), case_fields, then `extra`."""
    meta = {"reference": reference,
            "cases": ";".join(",".join(str(x) for x in c) for c in cases),
            "case_fields": case_fields}
    meta.update(extra)
    safetensors_io.save(os.path.abspath(out), tensors, meta)
