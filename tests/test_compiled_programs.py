"""What a TPU v5e and an H100 run for a step: compiled ahead of time here.

These tests need the ``aot`` tools (libtpu and the CUDA plugin, installed by
``bash scripts/setup_venv.sh --aot``) and are skipped without them. A loop
in the optimizer step runs serially on the device; a copy of a window means
that the window was not updated in place; each kernel is a launch.
"""

import functools
import importlib.util
import re

import pytest

from benchmarks import compiled_cost
from benchmarks import variants

TARGETS = [
  pytest.param(
    'tpu-v5e',
    marks=pytest.mark.skipif(
      importlib.util.find_spec('libtpu') is None,
      reason='needs libtpu (bash scripts/setup_venv.sh --aot)',
    ),
  ),
  pytest.param(
    'h100',
    marks=pytest.mark.skipif(
      importlib.util.find_spec('jax_cuda12_plugin') is None,
      reason='needs the CUDA plugin (bash scripts/setup_venv.sh --aot)',
    ),
  ),
]
# A window size that no other array has, so that its copies can be found.
WINDOW = 100_003
NUM_PARAMS = 800_000  # 8 leaves of 100,000.
# Kernels over clip_by_global_norm's step, as compiled with jax 0.10.2.
KERNEL_BUDGET = {'tpu-v5e': 4, 'h100': 8}
WINDOWED = (
  variants.AUTOCLIP,
  variants.PER_LEAF,
  variants.PER_LABEL,
  variants.SKIP,
)


@functools.cache
def compiled(target, variant, window=WINDOW):
  tx = variants.variants(window)[variant]
  device = compiled_cost.target_device(target)
  program = compiled_cost.compile_step(
    tx, compiled_cost.abstract_model(NUM_PARAMS), device
  )
  text = program.as_text()
  return compiled_cost.analyse(
    program if device.platform == 'tpu' else None, text
  ), text


def window_copies(text):
  """Copy instructions whose result is window-shaped."""
  return re.findall(rf'= \S*\[(?:\d+,)?{WINDOW}\]\S* copy(?:-start)?\(', text)


@pytest.mark.parametrize('target', TARGETS)
@pytest.mark.parametrize('variant', WINDOWED)
def test_step_has_no_loop(target, variant):
  cost, _ = compiled(target, variant)
  assert cost.while_loops == 0


@pytest.mark.parametrize('target', TARGETS)
@pytest.mark.parametrize('variant', WINDOWED)
def test_window_is_never_copied_on_gpu_nor_copied_whole_on_tpu(target, variant):
  _, text = compiled(target, variant)
  if target == 'h100':
    assert not window_copies(text)
  else:
    # XLA:TPU may stage a window through on-chip memory with copy-start;
    # a plain copy would mean an update that is not in place.
    assert not [
      copy for copy in window_copies(text) if 'copy-start' not in copy
    ]


@pytest.mark.parametrize('target', TARGETS)
def test_autoclip_adds_few_kernels_to_a_fixed_clip(target):
  autoclip_kernels = compiled(target, variants.AUTOCLIP)[0].kernels
  clip_kernels = compiled(target, variants.BASELINE)[0].kernels
  assert autoclip_kernels - clip_kernels <= KERNEL_BUDGET[target]


@pytest.mark.parametrize('target', TARGETS)
def test_skip_spikes_copies_nothing_of_the_inner_state_on_gpu(target):
  cost, _ = compiled(target, variants.SKIP)
  if target == 'h100':
    assert cost.largest_copy_bytes < 4 * 100_000  # A params leaf's size.
  assert cost.while_loops == 0


@pytest.mark.parametrize('variant', WINDOWED)
def test_small_windows_cost_about_a_fixed_clip_by_tpu_cost_model(variant):
  # With windows of 1000, what is left is how the step around them
  # compiles: reading a group's scale out of a vector once staged all of
  # Adam's state through on-chip memory, 3x the fixed clip.
  if importlib.util.find_spec('libtpu') is None:
    pytest.skip('needs libtpu (bash scripts/setup_venv.sh --aot)')
  cost = compiled('tpu-v5e', variant, window=1000)[0]
  clip = compiled('tpu-v5e', variants.BASELINE, window=1000)[0]
  assert cost.tpu_seconds <= 1.05 * clip.tpu_seconds
