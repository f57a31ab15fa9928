#!/usr/bin/python3
"""The Python example client (client/python/kdeserve_client.py) against a fake grpc.server.

Imports the stubs CMake generated into <build>/client/python (PYTHONPATH, set by ctest), so it
also proves the build-time stub generation. Run: ctest -R client_python_test.
"""

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
import unittest
from concurrent import futures
import importlib.util

import grpc

from kdeserve.v1 import inference_pb2, inference_pb2_grpc
import health_pb2
import health_pb2_grpc

CLIENT_PY = os.environ.get("KDESERVE_CLIENT_PY") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "client", "python",
    "kdeserve_client.py")


def load_client_module():
    spec = importlib.util.spec_from_file_location("kdeserve_client", CLIENT_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeInference(inference_pb2_grpc.InferenceServicer):
    """Top class index = image byte count; model names pick errors like the C++ fake."""

    def __init__(self):
        self.requests = []

    def _error(self, model, context):
        codes = {"missing": grpc.StatusCode.NOT_FOUND, "busy": grpc.StatusCode.RESOURCE_EXHAUSTED,
                 "bad": grpc.StatusCode.INVALID_ARGUMENT}
        if model == "slow":
            time.sleep(1.0)
        if model in codes:
            context.abort(codes[model], "fake says " + model)

    def Classify(self, request, context):
        self.requests.append(request)
        self._error(request.model, context)
        k = request.top_k or 5
        results = []
        for image in request.images:
            n = len(image.encoded)
            results.append(inference_pb2.Classification(top_k=[
                inference_pb2.ClassPrediction(index=(n + r) % 1000, wnid="n%08d" % r,
                                              label="label%d" % ((n + r) % 1000),
                                              probability=0.5 / (r + 1)) for r in range(k)]))
        return inference_pb2.ClassifyResponse(model=request.model, results=results,
                                              attention=inference_pb2.ATTENTION_MODE_EXACT)

    def Generate(self, request, context):
        self.requests.append(request)
        self._error(request.model, context)
        images = []
        for i, item in enumerate(request.items):
            seed = item.seed if item.WhichOneof("noise") == "seed" else 7000 + i
            images.append(inference_pb2.GeneratedImage(
                data=b"\x89PNG" + bytes([i]) * 12, format=inference_pb2.IMAGE_FORMAT_PNG,
                height=128, width=128, seed=seed, truncation=item.truncation or 0.4))
        return inference_pb2.GenerateResponse(model=request.model, images=images)

    def ListModels(self, request, context):
        return inference_pb2.ListModelsResponse(models=[
            inference_pb2.ModelInfo(name="t2t_vit_t_24", kind=inference_pb2.MODEL_KIND_CLASSIFIER,
                                    ready=True, device="cpu"),
            inference_pb2.ModelInfo(name="biggan-deep-128",
                                    kind=inference_pb2.MODEL_KIND_GENERATOR, ready=True)])


class FakeHealth(health_pb2_grpc.HealthServicer):
    statuses = {"": health_pb2.HealthCheckResponse.SERVING,
                "readiness": health_pb2.HealthCheckResponse.NOT_SERVING}

    def Check(self, request, context):
        if request.service not in self.statuses:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=self.statuses[request.service])


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.inference = FakeInference()
        cls.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        inference_pb2_grpc.add_InferenceServicer_to_server(cls.inference, cls.server)
        health_pb2_grpc.add_HealthServicer_to_server(FakeHealth(), cls.server)
        cls.port = cls.server.add_insecure_port("127.0.0.1:0")
        cls.server.start()
        cls.address = "127.0.0.1:%d" % cls.port
        cls.client = load_client_module()
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop(grace=None)
        cls.tmp.cleanup()

    def run_main(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = self.client.main(["--address", self.address] + list(argv))
        return code, out.getvalue(), err.getvalue()

    def test_classify_directory_in_batches(self):
        folder = os.path.join(self.tmp.name, "images")
        os.makedirs(folder)
        for i in range(3):
            with open(os.path.join(folder, "img%d.jpg" % i), "wb") as f:
                f.write(b"x" * (10 + i))
        with open(os.path.join(folder, "readme.txt"), "w") as f:
            f.write("skip me")
        before = len(self.inference.requests)
        code, out, err = self.run_main("classify", "--batch", "2", "--top-k", "2",
                                       "--attention", "kdeformer", folder)
        self.assertEqual(code, 0, err)
        self.assertEqual(len(self.inference.requests) - before, 2)
        last = self.inference.requests[-1]
        self.assertEqual(last.model, "t2t_vit_t_24")  # chosen from ListModels
        self.assertEqual(last.top_k, 2)
        self.assertEqual(last.attention, inference_pb2.ATTENTION_MODE_KDEFORMER)
        self.assertIn(os.path.join(folder, "img2.jpg") + "\n  1. 0.5000  12  n00000000  label12\n",
                      out)
        self.assertNotIn("readme", out)

    def test_attention_accepts_every_mode_of_the_proto(self):
        names = ["exact", "kdeformer", "performer", "reformer", "scatterbrain",
                 "hyperattention", "wildcat", "thinformer"]
        self.assertEqual(sorted(self.client.ATTENTION), sorted(names + ["default"]))
        for name in names:
            number = getattr(inference_pb2, "ATTENTION_MODE_" + name.upper())
            self.assertEqual(self.client.ATTENTION[name], number)
            self.assertEqual(self.client.attention_name(number), name)
        self.assertEqual(self.client.attention_name(42), "mode 42")
        folder = os.path.join(self.tmp.name, "one")
        os.makedirs(folder)
        with open(os.path.join(folder, "a.png"), "wb") as f:
            f.write(b"y" * 5)
        code, _, err = self.run_main("classify", "--attention", "wildcat", folder)
        self.assertEqual(code, 0, err)
        self.assertEqual(self.inference.requests[-1].attention,
                         inference_pb2.ATTENTION_MODE_WILDCAT)

    def test_generate_writes_png_and_prints_seeds(self):
        out_dir = os.path.join(self.tmp.name, "gen")
        code, out, err = self.run_main("generate", "--model", "biggan-deep-128", "--classes",
                                       "207,980", "--seed", "5", "--out", out_dir)
        self.assertEqual(code, 0, err)
        self.assertIn("seeds: 5,6", out)
        request = self.inference.requests[-1]
        self.assertEqual([item.class_id for item in request.items], [207, 980])
        path = os.path.join(out_dir, "biggan-deep-128_class980_seed6.png")
        with open(path, "rb") as f:
            self.assertEqual(f.read(4), b"\x89PNG")
        code, out, err = self.run_main("generate", "--model", "biggan-deep-128", "--classes",
                                       "1", "--out", out_dir)
        self.assertEqual(code, 0, err)
        self.assertIn("seeds: 7000", out)

    def test_errors_map_to_exit_codes(self):
        code, _, err = self.run_main("classify", "--model", "missing", CLIENT_PY)
        self.assertEqual(code, 10 + 5)
        self.assertIn("NOT_FOUND", err)
        self.assertIn("fake says missing", err)
        code, _, err = self.run_main("generate", "--model", "busy", "--classes", "1",
                                     "--out", self.tmp.name)
        self.assertEqual(code, 10 + 8)
        self.assertIn("RESOURCE_EXHAUSTED", err)
        code, _, err = self.run_main("--deadline", "0.2", "classify", "--model", "slow", CLIENT_PY)
        self.assertEqual(code, 10 + 4)
        self.assertIn("DEADLINE_EXCEEDED", err)
        code, _, err = self.run_main("classify", os.path.join(self.tmp.name, "absent.png"))
        self.assertEqual(code, 3)

    def test_models_and_health(self):
        code, out, _ = self.run_main("models")
        self.assertEqual(code, 0)
        self.assertIn("biggan-deep-128", out)
        self.assertIn("MODEL_KIND_GENERATOR", out)
        self.assertEqual(self.run_main("health")[:2], (0, "SERVING\n"))
        self.assertEqual(self.run_main("health", "--service", "readiness")[:2],
                         (1, "NOT_SERVING\n"))
        self.assertEqual(self.run_main("health", "--service", "nope")[0], 10 + 5)

    def test_runs_as_a_script(self):
        result = subprocess.run(
            [sys.executable, CLIENT_PY, "--address", self.address, "health"],
            capture_output=True, text=True, timeout=60, env=dict(os.environ))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "SERVING\n")


if __name__ == "__main__":
    unittest.main(verbosity=2)
