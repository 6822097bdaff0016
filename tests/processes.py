"""What the tests that start JAX processes of their own share."""

import os
import pathlib
import socket
import subprocess

# How long a test waits for the processes it started.
TIMEOUT_SECONDS = 300

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now."""
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]


def cpu_environment(num_devices: int) -> dict[str, str]:
  """This process's environment, for a JAX process of CPU devices only.

  Args:
    num_devices: the host devices it has
      (``--xla_force_host_platform_device_count``).

  Returns:
    The environment; ``XLA_FLAGS`` keeps the flags it has here
    (``conftest.py``'s).
  """
  flags = os.environ.get('XLA_FLAGS', '')
  return dict(
    os.environ,
    JAX_PLATFORMS='cpu',
    XLA_FLAGS=f'{flags} --xla_force_host_platform_device_count={num_devices}',
  )


def outputs(processes: list[subprocess.Popen]) -> list[tuple[int, str]]:
  """Waits for every process; returns ``(exit status, output)`` of each.

  Each process's output waits in its pipe until then, so it must stay
  small (a few kB). Every process is killed on the way out, ended or not.
  """
  ended = []
  try:
    for process in processes:
      output, _ = process.communicate(timeout=TIMEOUT_SECONDS)
      ended.append((process.returncode, output))
    return ended
  finally:
    for process in processes:
      process.kill()


def succeeded(processes: list[subprocess.Popen]) -> list[str]:
  """Each process's output, once every one has exited 0."""
  ended = outputs(processes)
  for status, output in ended:
    assert status == 0, output[-3000:]
  return [output for _, output in ended]
