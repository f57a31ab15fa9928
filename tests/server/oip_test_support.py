"""The helpers of oip_tritonclient_test.py (tritonclient[grpc] and numpy, which the test has
imported by then): InferInput builders, expect()/expect_error() (a failed expect() is listed in
`missed` and the area goes on), ModelInfer through the raw stub, protobuf wire fields, a PNG decoder
and a Prometheus sample reader."""
import re
import socket
import struct
import zlib

import grpc
import numpy as np
import tritonclient.grpc as tc
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
missed = []  # failed expect()s of the running area


def expect(cond, what):
    """A check the area goes on after: failures are listed when the area ends."""
    if not cond:
        missed.append(str(what))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tensor(name, array, datatype=None):
    """An InferInput holding `array` (raw contents, as tritonclient always sends)."""
    array = np.asarray(array)
    t = tc.InferInput(name, list(array.shape), datatype or np_to_triton_dtype(array.dtype))
    t.set_data_from_numpy(array)
    return t


def images(*blobs):
    return tensor("IMAGE", np.array(list(blobs), dtype=np.object_))


def i64(*values):
    return np.array(values, np.int64)


def u64(*values):
    return np.array(values, np.uint64)


def outs(*names):
    return [tc.InferRequestedOutput(n) for n in names]


def param(p):
    return getattr(p, p.WhichOneof("parameter_choice"))


def response_params(result):
    return {k: param(v) for k, v in result.get_response().parameters.items()}


def close(a, b, tol=1e-4):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and float(np.max(np.abs(a - b))) <= tol * max(1.0, float(np.max(np.abs(a))))


def softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def expect_error(code, fn, *args, names=(), any_of=(), soft=False, **kw):
    """fn(*args, **kw) must raise InferenceServerException with StatusCode.<code> whose message
    contains every string of `names` and one of `any_of` (case-insensitive). soft: a failure is
    recorded with expect() and the area goes on."""
    if soft:
        try:
            return expect_error(code, fn, *args, names=names, any_of=any_of, **kw)
        except AssertionError as e:
            return expect(False, e)
    try:
        fn(*args, **kw)
    except InferenceServerException as e:
        msg = e.message() or ""
        assert e.status() == f"StatusCode.{code}", f"expected {code}, got {e.status()}: {msg!r}"
        for n in names:
            assert n.lower() in msg.lower(), f"{code} message does not name {n!r}: {msg!r}"
        assert not any_of or any(n.lower() in msg.lower() for n in any_of), \
            f"{code} message names none of {any_of}: {msg!r}"
        return msg
    raise AssertionError(f"expected {code}, the call succeeded")


def stub_infer(stub, request):
    """ModelInfer through tritonclient's generated stub (typed contents, malformed requests)."""
    try:
        return tc.InferResult(stub.ModelInfer(request, timeout=300))
    except grpc.RpcError as e:
        raise InferenceServerException(msg=e.details(), status=str(e.code())) from None


def pb_request(model, *inputs, raw=()):
    """inputs: (name, datatype, shape) triples; returns (request, [InferInputTensor])."""
    req = service_pb2.ModelInferRequest(model_name=model)
    tensors = [req.inputs.add(name=n, datatype=d, shape=list(s)) for n, d, s in inputs]
    req.raw_input_contents.extend(raw)
    return req, tensors


def png_decode(data):
    """8-bit, non-interlaced grey/RGB/RGBA PNG → uint8 [H,W,C] (numpy and zlib; no PIL here)."""
    assert data[:8] == PNG_SIGNATURE, data[:8]
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0], kind
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and interlace == 0 and ctype in (0, 2, 6), ihdr
    ch = {0: 1, 2: 3, 6: 4}[ctype]
    stride = w * ch
    raw = zlib.decompress(b"".join(idat))
    assert len(raw) == h * (stride + 1), (len(raw), h, stride)
    rows, prev = [], np.zeros(stride, np.uint8)
    for y in range(h):
        f, line = raw[y * (stride + 1)], np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1)
        if f == 0:
            cur = line.copy()
        elif f == 1:  # Sub: a running sum per channel
            cur = (np.cumsum(line.reshape(w, ch).astype(np.uint64), axis=0) & 255).astype(np.uint8).ravel()
        elif f == 2:  # Up
            cur = line + prev
        else:  # Average, Paeth: sequential
            cur, p, c = bytearray(line.tobytes()), prev.tobytes(), None
            for i in range(stride):
                a = cur[i - ch] if i >= ch else 0
                b = p[i]
                if f == 3:
                    cur[i] = (cur[i] + ((a + b) >> 1)) & 255
                else:
                    c = p[i - ch] if i >= ch else 0
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            cur = np.frombuffer(bytes(cur), np.uint8)
        rows.append(cur)
        prev = cur
    return np.stack(rows).reshape(h, w, ch)


def wire_fields(buf):
    """(field number, value) of a serialized protobuf message (varint or bytes values)."""
    def varint(i):
        v = s = 0
        while True:
            b = buf[i]
            v, s, i = v | (b & 127) << s, s + 7, i + 1
            if b < 128:
                return v, i
    i = 0
    while i < len(buf):
        key, i = varint(i)
        if key & 7 == 0:
            val, i = varint(i)
        elif key & 7 == 2:
            n, i = varint(i)
            val, i = buf[i:i + n], i + n
        else:
            width = 8 if key & 7 == 1 else 4
            val, i = buf[i:i + width], i + width
        yield key >> 3, val


def metric(text, name, **labels):
    """The sum of the samples of one Prometheus metric whose labels include `labels`."""
    total = 0.0
    for m in re.finditer(r"^(\w+)(?:\{(.*)\})? (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if m.group(1) == name and all(have.get(k) == x or (k == "le" and k in have and float(have[k]) == float(x))
                                      for k, x in labels.items()):  # le="1" may be written 1.0
            total += float(m.group(3))
    return total
