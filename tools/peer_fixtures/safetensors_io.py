"""Writes safetensors files from numpy arrays (Debian's Python has numpy and torch 1.13 but no
safetensors package). Format: 8-byte little-endian header length, a JSON header mapping each
name to its dtype, shape and byte range, then the raw little-endian tensor bytes."""
import json
import struct

import numpy as np

_DTYPES = {np.dtype("float64"): "F64", np.dtype("float32"): "F32", np.dtype("int64"): "I64",
           np.dtype("int32"): "I32", np.dtype("uint8"): "U8", np.dtype("bool"): "BOOL"}


def save(path, tensors, metadata=None):
    """tensors: {name: numpy array or torch tensor}; metadata: {str: str} (e.g. the reference
    commit and the settings)."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        value = tensors[name]
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        array = np.ascontiguousarray(value)
        if array.dtype not in _DTYPES:
            raise TypeError(f"{name}: unsupported dtype {array.dtype}")
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _DTYPES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for blob in blobs:
            f.write(blob)
