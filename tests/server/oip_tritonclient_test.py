#!/usr/bin/env python3
"""The Open Inference Protocol (KServe v2 / Triton gRPC, inference.GRPCInferenceService) of
kdeserve-server, end to end with the real Triton client (tritonclient[grpc] of the project venv,
requirements/checks.txt). Starts the server once on free loopback ports with the built-in
configuration (seeded random weights: no class is asserted, only self-consistency and
determinism) and checks: health, server/model metadata, model config, repository index,
statistics, UNIMPLEMENTED extensions; classification from IMAGE bytes, PIXELS and INPUT tensors
(softmax, top-k classification outputs, determinism, batch independence); typed `contents`
against raw contents (through tritonclient's own service_pb2 stub); both attention modes and
the response parameters; BigGAN generation (CLASS INT32/INT64, CLASS_WEIGHTS, SEED, Z,
TRUNCATION, IMAGE/PNG/SEED outputs); INVALID_ARGUMENT / NOT_FOUND for bad requests, naming the
tensor; concurrent requests batched together (/metrics); SIGTERM → exit 0.

Each area runs on its own; the failures of all areas are listed at the end (exit 1).
Exit 77 (ctest SKIP_RETURN_CODE) when tritonclient or numpy cannot be imported.

usage: oip_tritonclient_test.py SERVER_BINARY PHOTO_FILE
"""
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
import urllib.request

SKIP = 77
try:
    import grpc
    import numpy as np
    import tritonclient.grpc as tc
    from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
    from tritonclient.utils import InferenceServerException
except ImportError as e:
    print(f"SKIP: tritonclient[grpc] and numpy are needed ({e}); they are in the project venv "
          "(bash scripts/install_deps.sh installs requirements/checks.txt)")
    sys.exit(SKIP)

from oip_test_support import (PNG_SIGNATURE, close, expect, expect_error, free_port,  # noqa: E402
                              i64, images, metric, missed, outs, pb_request, png_decode,
                              response_params, softmax, stub_infer, tensor, u64, wire_fields)

T2T, GAN = "t2t_vit_t_24", "biggan-deep-128"
RNG = np.random.default_rng(0)
X0 = RNG.standard_normal((1, 3, 224, 224)).astype(np.float32)  # deterministic INPUT tensors
X1 = RNG.standard_normal((1, 3, 224, 224)).astype(np.float32)
known = {}  # results later areas compare against


def check_health_and_metadata(client, channel):
    assert client.is_server_live() is True
    assert client.is_server_ready() is True
    for model in (T2T, GAN):
        assert client.is_model_ready(model) is True, model
        assert client.is_model_ready(model, "1") is True, model
    expect_error("NOT_FOUND", client.is_model_ready, "no_such_model", names=["no_such_model"])
    expect_error("NOT_FOUND", client.is_model_ready, T2T, "2")

    meta = client.get_server_metadata()
    assert meta.name == "kdeserve" and meta.version, meta
    assert set(meta.extensions) == {"classification", "model_configuration", "statistics",
                                    "parameters"}, meta.extensions

    def io(tensors):
        return {t.name: (t.datatype, list(t.shape)) for t in tensors}
    m = client.get_model_metadata(T2T)
    assert m.name == T2T and list(m.versions) == ["1"] and m.platform == "kdeserve", m
    assert io(m.inputs) == {"IMAGE": ("BYTES", [-1]), "PIXELS": ("UINT8", [-1, -1, -1, 3]),
                            "INPUT": ("FP32", [-1, 3, 224, 224])}, io(m.inputs)
    assert io(m.outputs) == {"LOGITS": ("FP32", [-1, 1000]),
                             "PROBABILITIES": ("FP32", [-1, 1000])}, io(m.outputs)
    g = client.get_model_metadata(GAN, "1")
    assert g.name == GAN and list(g.versions) == ["1"] and g.platform == "kdeserve", g
    gi = io(g.inputs)
    assert set(gi) == {"CLASS", "CLASS_WEIGHTS", "SEED", "Z", "TRUNCATION"}, gi
    assert gi["CLASS"][0] in ("INT32", "INT64") and gi["CLASS"][1] == [-1], gi
    assert gi["CLASS_WEIGHTS"] == ("FP32", [-1, 1000]) and gi["SEED"] == ("UINT64", [-1]), gi
    assert gi["Z"] == ("FP32", [-1, 128]), gi
    assert gi["TRUNCATION"][0] in ("FP32", "FP64") and gi["TRUNCATION"][1] == [-1], gi
    assert io(g.outputs) == {"IMAGE": ("UINT8", [-1, 128, 128, 3]), "PNG": ("BYTES", [-1]),
                             "SEED": ("UINT64", [-1])}, io(g.outputs)
    expect_error("NOT_FOUND", client.get_model_metadata, "no_such_model")
    expect_error("NOT_FOUND", client.get_model_metadata, T2T, "2")

    # properties (field 6, OIP 2023) are not in tritonclient's proto: read them off the wire.
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelMetadata",
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=lambda b: b)
    for model, kind in ((T2T, "classifier"), (GAN, "generator")):
        props = {}
        for num, entry in wire_fields(call(service_pb2.ModelMetadataRequest(name=model), timeout=30)):
            if num == 6:
                kv = dict(wire_fields(entry))
                props[kv.get(1, b"").decode()] = kv.get(2, b"").decode()
        want = {"attention": "kdeformer", "allowed_attention": "exact, kdeformer", "kind": kind}
        expect(all(props.get(k) == v for k, v in want.items()), f"{model} properties {props}")


def check_config_and_repository(client):
    def config(model, limit):
        c = client.get_model_config(model).config
        assert c.name == model and c.platform == "kdeserve" and c.backend == "kdeserve", c
        assert c.max_batch_size == limit, (model, c.max_batch_size)
        assert c.dynamic_batching.max_queue_delay_microseconds == 5000, c.dynamic_batching
        io = lambda ts: {t.name: (model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in ts}  # noqa
        return io(c.input), io(c.output)
    ins, outs_ = config(T2T, 8)
    assert ins == {"IMAGE": ("TYPE_STRING", []), "PIXELS": ("TYPE_UINT8", [-1, -1, 3]),
                   "INPUT": ("TYPE_FP32", [3, 224, 224])}, ins
    assert outs_ == {"LOGITS": ("TYPE_FP32", [1000]), "PROBABILITIES": ("TYPE_FP32", [1000])}, outs_
    ins, outs_ = config(GAN, 4)
    assert set(ins) == {"CLASS", "CLASS_WEIGHTS", "SEED", "Z", "TRUNCATION"}, ins
    assert ins["Z"] == ("TYPE_FP32", [128]) and ins["SEED"] == ("TYPE_UINT64", []), ins
    assert ins["CLASS_WEIGHTS"] == ("TYPE_FP32", [1000]), ins
    assert outs_ == {"IMAGE": ("TYPE_UINT8", [128, 128, 3]), "PNG": ("TYPE_STRING", []),
                     "SEED": ("TYPE_UINT64", [])}, outs_
    expect_error("NOT_FOUND", client.get_model_config, "no_such_model")

    index = client.get_model_repository_index()
    assert {(m.name, m.version, m.state) for m in index.models} == {
        (T2T, "1", "READY"), (GAN, "1", "READY")}, index


def check_unimplemented(client):
    for fn, args in ((client.load_model, (T2T,)), (client.unload_model, (T2T,)),
                     (client.get_system_shared_memory_status, ()),
                     (client.get_cuda_shared_memory_status, ()),
                     (client.get_trace_settings, ()), (client.get_log_settings, ())):
        msg = expect_error("UNIMPLEMENTED", fn, *args)
        assert msg.strip(), f"{fn.__name__}: UNIMPLEMENTED without a reason"
    errors, done = [], threading.Event()
    client.start_stream(callback=lambda result, error: (errors.append(error), done.set()))
    try:
        try:
            client.async_stream_infer(T2T, [tensor("INPUT", X0)])
        except InferenceServerException:
            pass  # the server ended the stream already: its status went to the callback
        assert done.wait(60), "ModelStreamInfer: no answer"
    finally:
        client.stop_stream()
    assert errors[0] is not None and errors[0].status() == "StatusCode.UNIMPLEMENTED", errors


def check_statistics(client):
    before = {s.name: s for s in client.get_inference_statistics("").model_stats}
    assert set(before) == {T2T, GAN}, before.keys()
    t_start = time.time() * 1000
    client.infer(T2T, [tensor("INPUT", np.concatenate([X0, X1]))], outputs=outs("LOGITS"))
    b, deadline = before[T2T], time.time() + 5
    while True:  # a call is counted once its response went out: give it a moment
        s = client.get_inference_statistics(T2T).model_stats
        assert len(s) == 1 and s[0].name == T2T and s[0].version == "1", s
        s = s[0]
        if s.inference_stats.success.count > b.inference_stats.success.count or time.time() > deadline:
            break
        time.sleep(0.05)
    assert s.inference_count == b.inference_count + 2, (b.inference_count, s.inference_count)
    assert s.execution_count == b.execution_count + 1, (b.execution_count, s.execution_count)
    assert s.inference_stats.success.count > b.inference_stats.success.count, s.inference_stats
    assert s.inference_stats.compute_infer.count > b.inference_stats.compute_infer.count
    assert s.inference_stats.compute_infer.ns > b.inference_stats.compute_infer.ns
    assert s.inference_stats.queue.count > b.inference_stats.queue.count
    assert t_start - 1000 <= s.last_inference <= time.time() * 1000 + 1000, s.last_inference
    assert any(x.batch_size == 2 and x.compute_infer.count >= 1 for x in s.batch_stats), s.batch_stats
    assert sum(x.compute_infer.count for x in s.batch_stats) == s.execution_count, s
    assert sum(x.batch_size * x.compute_infer.count for x in s.batch_stats) == s.inference_count, s
    assert client.get_inference_statistics(GAN).model_stats[0].name == GAN
    expect_error("NOT_FOUND", client.get_inference_statistics, "no_such_model")


def check_classify_image(client, photo, tsv_labels):
    r = client.infer(T2T, [images(photo)], outputs=outs("LOGITS", "PROBABILITIES"))
    logits, probs = r.as_numpy("LOGITS"), r.as_numpy("PROBABILITIES")
    assert logits.shape == (1, 1000) and probs.shape == (1, 1000), (logits.shape, probs.shape)
    assert logits.dtype == np.float32 and probs.dtype == np.float32
    assert abs(float(probs.sum()) - 1) < 1e-4, probs.sum()
    assert np.argmax(logits) == np.argmax(probs)
    assert np.max(np.abs(probs - softmax(logits))) < 1e-5, np.max(np.abs(probs - softmax(logits)))
    resp = r.get_response()
    assert resp.model_name == T2T and resp.model_version == "1", resp.model_name
    again = client.infer(T2T, [images(photo)], outputs=outs("LOGITS")).as_numpy("LOGITS")
    assert np.array_equal(again, logits), "same image twice: different logits"
    known["photo_logits"] = logits

    # No outputs requested: both.
    r = client.infer(T2T, [images(photo)])
    assert {o.name for o in r.get_response().outputs} == {"LOGITS", "PROBABILITIES"}
    assert close(r.as_numpy("LOGITS"), logits)

    # classification=k: BYTES [1,k] "score:index:label", most probable first.
    r = client.infer(T2T, [images(photo)], outputs=[
        tc.InferRequestedOutput("PROBABILITIES", class_count=5),
        tc.InferRequestedOutput("LOGITS", class_count=3)])
    for name, k, full in (("PROBABILITIES", 5, probs[0]), ("LOGITS", 3, logits[0])):
        out = [o for o in r.get_response().outputs if o.name == name][0]
        assert out.datatype == "BYTES" and list(out.shape) == [1, k], out
        top = [e.decode().split(":", 2) for e in r.as_numpy(name).ravel()]
        scores, idx = [float(t[0]) for t in top], [int(t[1]) for t in top]
        assert idx == [int(i) for i in np.argsort(-full, kind="stable")[:k]], (name, idx)
        assert scores == sorted(scores, reverse=True), scores
        assert all(abs(s - full[i]) <= 1e-4 * max(1.0, abs(full[i])) for s, i in zip(scores, idx)), \
            (name, scores, [full[i] for i in idx])
        for (_, i, label) in top:
            assert label and (not tsv_labels or label in tsv_labels[int(i)]), (i, label)

    # Two images in one request: each as when alone.
    two = client.infer(T2T, [images(photo, photo)], outputs=outs("LOGITS")).as_numpy("LOGITS")
    assert two.shape == (2, 1000) and close(two[0], logits[0]) and close(two[1], logits[0])

    # PIXELS: the same photo decoded here, exact attention (the kdeformer seed hashes the bytes).
    pixels = png_decode(photo)[None]
    ex = {"attention": "exact"}
    a = client.infer(T2T, [images(photo)], outputs=outs("LOGITS"), parameters=ex).as_numpy("LOGITS")
    b = client.infer(T2T, [tensor("PIXELS", pixels)], outputs=outs("LOGITS"),
                     parameters=ex).as_numpy("LOGITS")
    assert close(a, b), f"IMAGE vs PIXELS: max diff {np.max(np.abs(a - b))}"


def check_classify_tensor(client):
    def logits(x, **kw):
        return client.infer(T2T, [tensor("INPUT", x)], outputs=outs("LOGITS"), **kw).as_numpy("LOGITS")
    l0, l1 = logits(X0), logits(X1)
    assert l0.shape == (1, 1000) and np.array_equal(logits(X0), l0), "same INPUT twice differs"
    both = logits(np.concatenate([X0, X1]))
    assert close(both[0], l0[0]) and close(both[1], l1[0]), \
        f"batch of 2 vs alone: {np.max(np.abs(both - np.concatenate([l0, l1])))}"
    known["x0"], known["x1"] = l0, l1


def check_typed_contents(client, stub, photo):
    for mode in ("kdeformer", "exact"):
        raw = client.infer(T2T, [tensor("INPUT", X0)], outputs=outs("LOGITS"),
                           parameters={"attention": mode}).as_numpy("LOGITS")
        req, (t,) = pb_request(T2T, ("INPUT", "FP32", X0.shape))
        t.contents.fp32_contents.extend(X0.ravel().tolist())
        req.parameters["attention"].string_param = mode
        req.outputs.add(name="LOGITS")
        typed = stub_infer(stub, req).as_numpy("LOGITS")
        assert close(raw, typed, 1e-5), f"{mode}: typed vs raw: {np.max(np.abs(raw - typed))}"
    req, (t,) = pb_request(T2T, ("IMAGE", "BYTES", [1]))
    t.contents.bytes_contents.append(photo)
    req.outputs.add(name="LOGITS")
    assert close(stub_infer(stub, req).as_numpy("LOGITS"), known["photo_logits"]), "typed IMAGE"
    req, (c, s) = pb_request(GAN, ("CLASS", "INT64", [1]), ("SEED", "UINT64", [1]))
    c.contents.int64_contents.append(207)
    s.contents.uint64_contents.append(3)
    req.outputs.add(name="IMAGE")
    typed = stub_infer(stub, req).as_numpy("IMAGE")
    raw = client.infer(GAN, [tensor("CLASS", i64(207)), tensor("SEED", u64(3))],
                       outputs=outs("IMAGE")).as_numpy("IMAGE")
    assert np.array_equal(typed, raw), "typed vs raw CLASS/SEED: different images"


def check_attention(client):
    for model, inp in ((T2T, [tensor("INPUT", X0)]),
                       (GAN, [tensor("CLASS", np.array([1], np.int32)),
                              tensor("SEED", u64(9))])):
        for mode in ("exact", "kdeformer", None):
            r = client.infer(model, inp, parameters={"attention": mode} if mode else None,
                             request_id=f"oip-{mode}", headers={"x-request-id": f"xr-{mode}"})
            p = response_params(r)
            assert p.get("attention") == (mode or "kdeformer"), (model, mode, p)
            assert isinstance(p.get("attention_plan"), str) and p["attention_plan"], p
            assert isinstance(p.get("batch_size"), int) and p["batch_size"] >= 1, p
            assert p.get("queue_seconds", -1) >= 0 and p.get("compute_seconds", 0) > 0, p
            assert p.get("request_id") == f"xr-{mode}", p
            assert r.get_response().id == f"oip-{mode}", r.get_response().id
        for bad in ("performer", "nosuchmode"):
            expect_error("INVALID_ARGUMENT", client.infer, model, inp,
                         parameters={"attention": bad}, any_of=["attention", bad])
    # No x-request-id: the server makes one up.
    p = response_params(client.infer(T2T, [tensor("INPUT", X0)], outputs=outs("LOGITS")))
    assert isinstance(p.get("request_id"), str) and p["request_id"], p


def check_generate(client):
    cls, seeds = i64(207, 980), u64(3, 4)
    r = client.infer(GAN, [tensor("CLASS", cls), tensor("SEED", seeds)])
    assert {o.name for o in r.get_response().outputs} == {"IMAGE", "PNG", "SEED"}
    img, png, seed = r.as_numpy("IMAGE"), r.as_numpy("PNG"), r.as_numpy("SEED")
    assert img.shape == (2, 128, 128, 3) and img.dtype == np.uint8, (img.shape, img.dtype)
    assert seed.dtype == np.uint64 and list(seed) == [3, 4], seed
    assert png.shape == (2,) and img.std() > 0
    for i in range(2):
        assert png[i][:8] == PNG_SIGNATURE and png[i][12:16] == b"IHDR", png[i][:16]
        assert struct.unpack(">II", png[i][16:24]) == (128, 128)
        assert np.array_equal(png_decode(png[i])[..., :3], img[i]), f"PNG {i} != IMAGE {i}"
    again = client.infer(GAN, [tensor("CLASS", cls), tensor("SEED", seeds)], outputs=outs("IMAGE"))
    assert np.array_equal(again.as_numpy("IMAGE"), img), "same seeds: different images"
    assert [o.name for o in again.get_response().outputs] == ["IMAGE"]

    def gen(*inputs, **kw):
        return client.infer(GAN, list(inputs), outputs=outs("IMAGE", "SEED"), **kw)

    def near(a, b):  # float rounding of another batch shape may move a pixel by one
        return a.shape == b.shape and int(np.max(np.abs(a.astype(int) - b.astype(int)))) <= 1
    one = gen(tensor("CLASS", np.array([207], np.int32)), tensor("SEED", u64(3)))
    assert near(one.as_numpy("IMAGE")[0], img[0]), "CLASS INT32 alone vs INT64 in a batch of 2"
    w = np.zeros((1, 1000), np.float32)
    w[0, 207] = 1
    cw = gen(tensor("CLASS_WEIGHTS", w), tensor("SEED", u64(3)))
    assert near(cw.as_numpy("IMAGE")[0], img[0]), "one-hot CLASS_WEIGHTS vs CLASS"

    # Truncation: the TRUNCATION tensor, else the "truncation" parameter, else 0.4.
    t04 = gen(tensor("CLASS", i64(207)), tensor("SEED", u64(3)),
              tensor("TRUNCATION", np.array([0.4], np.float32))).as_numpy("IMAGE")
    assert near(t04[0], img[0]), "TRUNCATION 0.4 != the default"
    p07 = gen(tensor("CLASS", i64(207)), tensor("SEED", u64(3)),
              parameters={"truncation": 0.7}).as_numpy("IMAGE")
    t07 = gen(tensor("CLASS", i64(207)), tensor("SEED", u64(3)),
              tensor("TRUNCATION", np.array([0.7], np.float64))).as_numpy("IMAGE")
    assert not np.array_equal(p07, t04) and near(p07, t07), "truncation 0.7: parameter vs tensor"

    # Z given: used as is, the seed (of the attention's random draws) derived from Z's bytes;
    # the same z twice → the same image and seed.
    z = np.random.default_rng(5).standard_normal((1, 128)).astype(np.float32) * 0.4
    zr = gen(tensor("CLASS", i64(207)), tensor("Z", z))
    assert zr.as_numpy("IMAGE").shape == (1, 128, 128, 3), zr.as_numpy("IMAGE").shape
    zr2 = gen(tensor("CLASS", i64(207)), tensor("Z", z))
    expect(list(zr.as_numpy("SEED")) == list(zr2.as_numpy("SEED")),
           f"Z given twice: seeds {zr.as_numpy('SEED')} and {zr2.as_numpy('SEED')} differ")
    assert np.array_equal(zr2.as_numpy("IMAGE"), zr.as_numpy("IMAGE")), \
        "the same Z twice: different images"
    assert not np.array_equal(gen(tensor("CLASS", i64(207)), tensor("Z", z * 0.5)).as_numpy("IMAGE"),
                              zr.as_numpy("IMAGE")), "another Z: the same image (Z ignored?)"
    # Neither SEED nor Z: the server draws one seed per item.
    drawn = [gen(tensor("CLASS", i64(1))).as_numpy("SEED") for _ in range(2)]
    assert drawn[0].shape == (1,) and drawn[0][0] != drawn[1][0], drawn


def check_bad_inputs(client, stub, photo):
    bad = lambda model, inputs, names=(), any_of=(), **kw: expect_error(  # noqa: E731
        "INVALID_ARGUMENT", client.infer, model, inputs, names=names, any_of=any_of, soft=True, **kw)
    bad(T2T, [tensor("INPUT", X0.astype(np.float64))], ["INPUT"])        # wrong datatype
    bad(T2T, [tensor("INPUT", X0[:, :, :, 0])], ["INPUT"])              # wrong rank
    bad(T2T, [tensor("INPUT", X0[:, :, :200, :200])], ["INPUT"])        # wrong shape
    bad(T2T, [tensor("PIXELS", np.zeros((1, 8, 8, 4), np.uint8))], ["PIXELS"])
    bad(T2T, [tensor("FOO", X0)], ["FOO"])                              # unknown input
    bad(T2T, [], any_of=["IMAGE", "PIXELS", "INPUT"])                  # missing input
    bad(T2T, [tensor("INPUT", X0), tensor("INPUT", X0)], ["INPUT"])     # duplicate input
    bad(T2T, [tensor("INPUT", X0), images(photo)], any_of=["INPUT", "IMAGE"])  # two of a kind
    bad(T2T, [images(*[photo] * 9)], ["IMAGE"])                         # above 8 per request
    bad(T2T, [images(b"not an image")], ["IMAGE"])
    bad(T2T, [tensor("INPUT", X0)], ["FOO"], outputs=outs("FOO"))      # unknown output
    for k in (1001, -1):
        bad(T2T, [tensor("INPUT", X0)], ["PROBABILITIES"],
            outputs=[tc.InferRequestedOutput("PROBABILITIES", class_count=k)])
    bad(GAN, [tensor("CLASS", i64(1000))], ["CLASS"])                   # class id out of range
    bad(GAN, [tensor("CLASS", i64(-1))], ["CLASS"])
    bad(GAN, [tensor("CLASS", i64(1, 2, 3, 4, 5))], ["CLASS"])          # above 4 per request
    bad(GAN, [tensor("CLASS", np.array([1.0], np.float32))], ["CLASS"])
    bad(GAN, [tensor("SEED", u64(1))], ["CLASS"])                      # missing CLASS
    bad(GAN, [tensor("CLASS", i64(1, 2)), tensor("SEED", u64(1))],
        any_of=["SEED", "CLASS"])                                       # batch sizes differ
    bad(GAN, [tensor("CLASS", i64(1)), tensor("Z", np.zeros((1, 64), np.float32))], ["Z"])
    bad(GAN, [tensor("CLASS", i64(1)), tensor("SEED", u64(1)),
              tensor("Z", np.zeros((1, 128), np.float32))], any_of=["SEED", "Z"])
    bad(GAN, [tensor("CLASS_WEIGHTS", -np.ones((1, 1000), np.float32))], ["CLASS_WEIGHTS"])
    bad(GAN, [tensor("CLASS_WEIGHTS", np.zeros((1, 1000), np.float32))], ["CLASS_WEIGHTS"])
    for t in (0.0, 2.0):
        bad(GAN, [tensor("CLASS", i64(1)), tensor("TRUNCATION", np.array([t], np.float32))],
            ["TRUNCATION"])
        bad(GAN, [tensor("CLASS", i64(1))], ["truncation"], parameters={"truncation": t})
    bad(GAN, [tensor("CLASS", i64(1))], ["truncation"], parameters={"truncation": 1})  # int64
    bad(GAN, [tensor("CLASS", i64(1))], ["PNGX"], outputs=outs("PNGX"))

    # Malformed contents, only possible with the raw stub.
    def raw_bad(req, names=(), any_of=()):
        expect_error("INVALID_ARGUMENT", stub_infer, stub, req, names=names, any_of=any_of, soft=True)
    raw_bad(pb_request(T2T, ("INPUT", "FP32", X0.shape), raw=[X0.tobytes()[:-4]])[0], ["INPUT"])
    raw_bad(pb_request(T2T, ("IMAGE", "BYTES", [1]),
                       raw=[struct.pack("<I", 1000) + b"abc"])[0], ["IMAGE"])  # prefix overrun
    req, (t,) = pb_request(T2T, ("INPUT", "FP32", X0.shape))
    t.contents.fp32_contents.extend([0.0] * 10)
    raw_bad(req, ["INPUT"])                                              # typed count mismatch
    req, (t,) = pb_request(GAN, ("CLASS", "INT64", [1]), raw=[i64(1).tobytes()])
    t.contents.int64_contents.append(1)
    raw_bad(req)                                                         # raw and typed mixed
    raw_bad(pb_request(GAN, ("CLASS", "INT64", [1]), ("SEED", "UINT64", [1]),
                       raw=[i64(1).tobytes()])[0])                       # raw count != inputs

    expect_error("NOT_FOUND", client.infer, "no_such_model", [tensor("INPUT", X0)],
                 names=["no_such_model"])
    expect_error("NOT_FOUND", client.infer, T2T, [tensor("INPUT", X0)], model_version="2")
    assert client.infer(T2T, [tensor("INPUT", X0)], model_version="1").get_response().model_version == "1"


def check_batching(client, metrics_url):
    def scrape():
        return urllib.request.urlopen(metrics_url, timeout=30).read().decode()
    ok_series = dict(model=T2T, rpc="ModelInfer", code="OK")

    # A call is counted once gRPC is done with it, after its response went out: let the earlier
    # cases' last calls land before taking the baseline.
    def settled():
        last = scrape()
        for _ in range(50):
            time.sleep(0.1)
            now = scrape()
            if metric(now, "kdeserve_requests_total", **ok_series) == \
                    metric(last, "kdeserve_requests_total", **ok_series):
                return now
            last = now
        return last
    before = settled()
    n, results, lock, done = 16, {}, threading.Lock(), threading.Event()
    xs = [X0, X1] + [RNG.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(n - 2)]

    def callback(i, result, error):
        with lock:
            results[i] = (result, error)
            if len(results) == n:
                done.set()
    for i, x in enumerate(xs):
        client.async_infer(T2T, [tensor("INPUT", x)], lambda result, error, i=i: callback(i, result, error),
                           outputs=outs("LOGITS"), client_timeout=300)
    assert done.wait(320), f"only {len(results)} of {n} concurrent requests answered"
    errors = [e for _, e in results.values() if e is not None]
    assert not errors, errors[:3]
    assert close(results[0][0].as_numpy("LOGITS"), known["x0"]), "concurrent row 0 vs alone"
    assert close(results[1][0].as_numpy("LOGITS"), known["x1"]), "concurrent row 1 vs alone"
    sizes = [response_params(r)["batch_size"] for r, _ in results.values()]
    assert max(sizes) > 1, f"no two concurrent requests ran together: batch sizes {sizes}"

    # A call is counted once its response went out: give the counters a moment to catch up.
    deadline = time.time() + 10
    while True:
        after = scrape()
        d = lambda name, **l: metric(after, name, **l) - metric(before, name, **l)  # noqa: E731
        if d("kdeserve_requests_total", **ok_series) >= n or time.time() > deadline:
            break
        time.sleep(0.1)
    batches = d("kdeserve_batch_size_count", model=T2T)
    singles = d("kdeserve_batch_size_bucket", model=T2T, le="1")
    assert d("kdeserve_batch_size_sum", model=T2T) == n, d("kdeserve_batch_size_sum", model=T2T)
    assert 1 <= batches < n and singles < batches, (batches, singles)
    ok = d("kdeserve_requests_total", **ok_series)
    assert ok == n, f"kdeserve_requests_total ModelInfer OK grew by {ok}, expected {n}"
    assert metric(after, "kdeserve_requests_total", rpc="ModelInfer", code="INVALID_ARGUMENT") > 0
    assert metric(after, "kdeserve_requests_total", rpc="ModelMetadata") > 0, "no ModelMetadata rpc"
    print(f"  16 concurrent requests ran in {batches:.0f} batches, sizes seen {sorted(set(sizes))}")


def main():
    server, photo_file = sys.argv[1:3]
    if not os.path.exists(photo_file):
        print(f"SKIP: the test photo {photo_file} is missing (KDESERVE_SHARED_DIR, ../shared)")
        sys.exit(SKIP)
    photo = open(photo_file, "rb").read()
    shared = os.environ.get("KDESERVE_SHARED_DIR",
                            os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
    tsv = os.path.join(shared, "data", "imagenet", "imagenet_class_index.tsv")
    labels = {}
    if os.path.exists(tsv):
        for line in open(tsv, encoding="utf-8").read().splitlines()[1:]:
            i, _, *names = line.split("\t")
            labels[int(i)] = names
    else:
        print(f"note: {tsv} missing: classification labels are not compared with it")

    port, mport = free_port(), free_port()
    t0 = time.time()
    proc = subprocess.Popen([server, "--listen", f"127.0.0.1:{port}",
                             "--metrics-listen", f"127.0.0.1:{mport}"])
    failures = []
    try:
        client = tc.InferenceServerClient(f"127.0.0.1:{port}")
        while True:
            assert proc.poll() is None, "server exited early"
            assert time.time() - t0 < 300, "not ready within 300 s"
            try:
                if client.is_server_ready(client_timeout=2):
                    break
            except InferenceServerException as e:
                assert e.status() != "StatusCode.UNIMPLEMENTED", \
                    f"this server has no inference.GRPCInferenceService: {e.message()}"
            time.sleep(0.2)
        print(f"ready after {time.time() - t0:.1f} s")
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)])
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        areas = [("health and metadata", lambda: check_health_and_metadata(client, channel)),
                 ("config and repository index", lambda: check_config_and_repository(client)),
                 ("unimplemented extensions", lambda: check_unimplemented(client)),
                 ("statistics", lambda: check_statistics(client)),
                 ("classify IMAGE/PIXELS", lambda: check_classify_image(client, photo, labels)),
                 ("classify INPUT", lambda: check_classify_tensor(client)),
                 ("typed contents", lambda: check_typed_contents(client, stub, photo)),
                 ("attention and response parameters", lambda: check_attention(client)),
                 ("generate", lambda: check_generate(client)),
                 ("bad requests", lambda: check_bad_inputs(client, stub, photo)),
                 ("concurrency and batching", lambda: check_batching(
                     client, f"http://127.0.0.1:{mport}/metrics"))]
        for name, fn in areas:
            t = time.time()
            try:
                missed.clear()
                fn()
                assert not missed, f"{len(missed)} check(s) failed:\n    " + "\n    ".join(missed)
                print(f"ok   {name} ({time.time() - t:.1f} s)")
            except Exception as e:  # noqa: BLE001 - every area reports, then the test fails
                failures.append(name)
                print(f"FAIL {name}: {type(e).__name__}: {e}")
                if not missed:
                    traceback.print_exc()
        client.close()
        channel.close()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        if rc != 0:
            failures.append(f"exit code {rc} after SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
    if failures:
        print("FAILED: " + "; ".join(failures))
        sys.exit(1)
    print("oip tritonclient test passed")


if __name__ == "__main__":
    main()
