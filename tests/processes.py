"""What the tests that start JAX processes of their own share."""

import os
import pathlib
import socket

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
