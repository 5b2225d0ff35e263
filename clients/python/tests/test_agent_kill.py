import os
import signal
import time
import unittest

from tests.engines import MiniVllm
from tests.harness import BS, PROFILE, require_env, start_agent, stop_agent, tokens_for, unique_ns

LOAD_TIMEOUT_S = 2.0


class AgentKillTest(unittest.TestCase):
    """A dedicated agent per test, stopped (SIGSTOP) before the load is sent so the load is
    certainly in flight, then killed (SIGKILL) or left stalled."""

    def setUp(self):
        require_env(self)
        self.proc, self.sock = start_agent()
        self.eng = MiniVllm(
            {"socket_path": self.sock, "model": PROFILE, "namespace": unique_ns("kill"), "timeout_s": LOAD_TIMEOUT_S, "reconnect_backoff_s": 0.2}
        )
        self.tokens = tokens_for(40, 4 * BS + 2)
        self.assertEqual(self.eng.run("warm", self.tokens), (0, set()))
        # A first hit sets up the worker's load region, so the killed load below is a get in flight.
        self.assertEqual(self.eng.run("warm-hit", self.tokens), (4 * BS, set()))

    def tearDown(self):
        self.eng.close()
        stop_agent(self.proc)

    def check_failed_load(self, on_loading, bound_s):
        # Stopped after the scheduler's lookup, before the load request is sent.
        self.eng.before_load = lambda: os.kill(self.proc.pid, signal.SIGSTOP)
        self.eng.on_loading = on_loading
        t0 = time.monotonic()
        ext, errors = self.eng.run("hit", self.tokens)  # run() recomputes and verifies byte-exact
        took = time.monotonic() - t0
        self.eng.on_loading = self.eng.before_load = None
        self.assertEqual(ext, 4 * BS)  # the scheduler saw the hit before the agent went away
        self.assertEqual(len(errors), 4)  # every block that was to be loaded is reported failed
        self.assertLess(took, bound_s)
        # The engine goes on: the dead agent is a miss, not an error.
        self.assertEqual(self.eng.run("after", self.tokens), (0, set()))

    def test_agent_killed_mid_load(self):
        def kill():
            os.kill(self.proc.pid, signal.SIGKILL)

        self.check_failed_load(kill, bound_s=LOAD_TIMEOUT_S)

    def test_agent_stalled_mid_load(self):
        # Stopped and never resumed during the load: the client's timeout bounds the wait.
        self.check_failed_load(None, bound_s=LOAD_TIMEOUT_S * 3 + 2)

    def test_recovers_when_a_new_agent_comes_up(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        self.assertEqual(self.eng.run("down", self.tokens), (0, set()))
        # Same socket path, new agent process: the adapter reconnects after its back-off.
        from tests.harness import AGENT_ARGV
        import subprocess

        argv = [a.replace("{socket}", self.sock) for a in AGENT_ARGV]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        ext = 0
        while time.monotonic() < deadline:
            time.sleep(0.3)
            ext, errors = self.eng.run("back", self.tokens)
            self.assertEqual(errors, set())
            if ext:
                break
        self.assertEqual(ext, 4 * BS)


if __name__ == "__main__":
    unittest.main()
