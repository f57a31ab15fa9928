#!/usr/bin/python3
"""Issue 11 part 2: the peer attention methods through the real server, end to end.

A server whose classifier allows every mode (default wildcat) and whose generator allows
exact, performer and thinformer: each peer runs on request and is named in the response, its
attention_plan, the metrics' attention label, the access log and ModelInfo; a mode the config
does not allow is INVALID_ARGUMENT naming the allowed ones; both CLIs take the new names.

Needs the methods themselves (attention/<method>/): until they are merged their placeholders
throw at warm-up and the server refuses to start, which fails setUpClass with its log.
Environment as integration_test.py (KDESERVE_SERVER, KDESERVE_CLI, KDESERVE_SHARED_DIR,
PYTHONPATH with the stubs and this folder)."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

import grpc
from kdeserve.v1 import inference_pb2 as pb

from integration_test import (CLASSIFIER, CLI, DOG, GENERATOR, SERVER, Server, code_of,
                              metric_value, model_yaml, read)

PEERS = ["performer", "reformer", "scatterbrain", "hyperattention", "wildcat", "thinformer"]
ALL_MODES = ["exact", "kdeformer"] + PEERS
GENERATOR_MODES = ["exact", "performer", "thinformer"]


def mode_value(name):
    return getattr(pb, "ATTENTION_MODE_" + name.upper())


@unittest.skipUnless(SERVER and os.path.exists(SERVER), "KDESERVE_SERVER not built")
class PeerAttentionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(DOG):
            raise unittest.SkipTest(f"missing shared file {DOG}")
        cls.server = Server([
            model_yaml(CLASSIFIER, ALL_MODES, "wildcat", 4, 5, 32, 4),
            model_yaml(GENERATOR, GENERATOR_MODES, "exact", 2, 5, 16, 2),
        ])
        cls.stub = cls.server.stub

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def classify(self, attention):
        return self.stub.Classify(pb.ClassifyRequest(
            model=CLASSIFIER, top_k=2, attention=attention,
            images=[pb.ImageInput(encoded=read(DOG))]), timeout=300)

    def test_every_peer_runs_on_request_and_is_named(self):
        for name in PEERS:
            with self.subTest(mode=name):
                reply = self.classify(mode_value(name))
                self.assertEqual(reply.attention, mode_value(name))
                self.assertIn(f"t2t_layer1={name}(", reply.attention_plan)
                self.assertIn(f"t2t_layer2={name}(", reply.attention_plan)
                self.assertIn("blocks=exact", reply.attention_plan)
                self.assertEqual(len(reply.results[0].top_k), 2)
        default = self.classify(pb.ATTENTION_MODE_UNSPECIFIED)
        self.assertEqual(default.attention, pb.ATTENTION_MODE_WILDCAT)
        self.assertIn("t2t_layer1=wildcat(r=224,bins=224,clamped)", default.attention_plan)

    def test_metrics_and_access_log_name_the_method(self):
        self.classify(pb.ATTENTION_MODE_PERFORMER)
        text = self.server.metrics()
        self.assertGreaterEqual(metric_value(text, "kdeserve_compute_duration_seconds_count",
                                             model=CLASSIFIER, attention="performer") or 0, 1)
        self.assertGreaterEqual(metric_value(text, "kdeserve_request_duration_seconds_count",
                                             model=CLASSIFIER, rpc="Classify",
                                             attention="performer") or 0, 1)
        self.server.log.flush()
        with open(self.server.log_path) as f:
            lines = [json.loads(line) for line in f if line.startswith("{")]
        access = [line for line in lines if line.get("msg") == "access"
                  and line.get("rpc") == "Classify"]
        self.assertTrue(any(line.get("attention") == "performer" and line.get("code") == "OK"
                            for line in access), access[-3:])

    def test_generator_runs_its_allowed_peers_and_refuses_the_others(self):
        for name in ("performer", "thinformer"):
            reply = self.stub.Generate(pb.GenerateRequest(
                model=GENERATOR, attention=mode_value(name), format=pb.IMAGE_FORMAT_RAW_RGB8,
                items=[pb.GenerateItem(class_id=207, seed=3)]), timeout=300)
            self.assertEqual(reply.attention, mode_value(name))
            self.assertIn(f"self_attention={name}(", reply.attention_plan)
            self.assertEqual(len(reply.images[0].data), 128 * 128 * 3)
        for name in ("reformer", "wildcat", "kdeformer"):
            with self.assertRaises(grpc.RpcError) as caught:
                self.stub.Generate(pb.GenerateRequest(
                    model=GENERATOR, attention=mode_value(name),
                    items=[pb.GenerateItem(class_id=1, seed=1)]), timeout=60)
            self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn(f"attention {name} is not allowed for model {GENERATOR} "
                          "(allowed: exact, performer, thinformer)", caught.exception.details())
        self.assertEqual(code_of(lambda: self.stub.Generate(pb.GenerateRequest(
            model=GENERATOR, attention=99, items=[pb.GenerateItem(class_id=1, seed=1)]),
            timeout=60)), grpc.StatusCode.INVALID_ARGUMENT)

    def test_model_info_lists_each_allowed_plan(self):
        info = self.stub.GetModelInfo(pb.GetModelInfoRequest(model=CLASSIFIER))
        self.assertEqual(list(info.allowed_attention), [mode_value(n) for n in ALL_MODES])
        self.assertEqual(info.default_attention, pb.ATTENTION_MODE_WILDCAT)
        self.assertEqual([p.attention for p in info.plans], [mode_value(n) for n in ALL_MODES])
        plans = {p.attention: p for p in info.plans}
        thin = plans[pb.ATTENTION_MODE_THINFORMER]
        self.assertEqual(thin.description, "blocks=exact, t2t_layer1=thinformer(g=2,strided), "
                                           "t2t_layer2=thinformer(g=4,strided)")
        self.assertEqual({l.group: l.settings for l in thin.layers}["t2t_layer2"],
                         "thinformer(g=4,strided)")
        self.assertEqual({l.group: l.method for l in info.attention_plan}["t2t_layer1"], "wildcat")

    def test_clis_take_the_new_names(self):
        out = subprocess.run([CLI, "--address", self.server.address, "classify", "--model",
                              CLASSIFIER, "--attention", "thinformer", "--top-k", "1", DOG],
                             capture_output=True, text=True, timeout=300)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("attention thinformer", out.stderr)  # the progress line
        out = subprocess.run([CLI, "--address", self.server.address, "models", CLASSIFIER],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("hyperattention: blocks=exact, t2t_layer1=hyperattention(", out.stdout)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "../../client/python/kdeserve_client.py")
        with tempfile.TemporaryDirectory() as d:
            out = subprocess.run([sys.executable, script, "--address", self.server.address,
                                  "generate", "--model", GENERATOR, "--classes", "207",
                                  "--seed", "3", "--attention", "performer", "--out", d],
                                 capture_output=True, text=True, timeout=300)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(len([f for f in os.listdir(d) if f.endswith(".png")]), 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
