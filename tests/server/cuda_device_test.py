#!/usr/bin/python3
"""A server asked for a CUDA device it cannot use refuses at start: a non-zero exit (not a
signal), within seconds, with a message naming the model, the device and why (this build has no
CUDA, or no device is visible), and no crash. Skipped where a CUDA device is usable (the server
would then serve). With a CPU configuration the same binary serves: server_smoke_test and the
integration tests run it.

usage: cuda_device_test.py SERVER_BINARY
"""

import os
import subprocess
import sys
import tempfile
import unittest

SERVER = sys.argv.pop(1) if len(sys.argv) > 1 else os.environ.get("KDESERVE_SERVER", "")


def cuda_visible():
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        return out.returncode == 0 and "GPU" in out.stdout
    except (OSError, subprocess.TimeoutExpired):
        return False


@unittest.skipUnless(SERVER and os.path.exists(SERVER), "no kdeserve-server binary given")
class CudaDeviceWithoutGpu(unittest.TestCase):
    def run_server(self, device):
        with tempfile.TemporaryDirectory() as tmp:
            config = os.path.join(tmp, "server.yaml")
            with open(config, "w") as f:
                f.write("server:\n  listen: 127.0.0.1:0\n  metrics_listen: 127.0.0.1:0\n"
                        f"models:\n  - name: t2t_vit_7\n    device: \"{device}\"\n")
            return subprocess.run([SERVER, "--config", config], capture_output=True, text=True,
                                  timeout=120)

    def test_refuses_cuda_devices_with_the_reason(self):
        if cuda_visible():
            self.skipTest("a CUDA device is visible: the server would serve on it")
        for device in ["cuda", "cuda:0", "cuda:3"]:
            out = self.run_server(device)
            self.assertGreater(out.returncode, 0, f"{device}: exit {out.returncode}\n{out.stderr}")
            message = out.stderr
            self.assertIn("invalid configuration", message)
            self.assertIn(f"models[0] (t2t_vit_7).device: '{device}' requested, but ", message)
            self.assertTrue("built without CUDA" in message or
                            "no CUDA device is visible" in message, message)
            self.assertIn("or use device: cpu", message)
            self.assertNotIn("Segmentation", message)
            self.assertNotIn("terminate called", message)


if __name__ == "__main__":
    unittest.main(verbosity=2)
