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
KERNEL_BUDGET = {'tpu-v5e': 4, 'h100': 3}
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
def test_autoclip_moves_about_as_much_memory_as_its_floor(target):
  # The floor: the fixed clip's step, plus one read and one write of the
  # window (the ring and the ranks). XLA:GPU writes the ranks in a kernel
  # of its own, and the reduction reads the window again: a pass more.
  autoclip = compiled(target, variants.AUTOCLIP)[0]
  clip = compiled(target, variants.BASELINE)[0]
  window = compiled_cost.window_bytes(
    variants.variants(WINDOW)[variants.AUTOCLIP],
    compiled_cost.abstract_model(NUM_PARAMS),
  )
  assert window == 8 * WINDOW
  passes = {'tpu-v5e': 2, 'h100': 3}[target]
  assert autoclip.hbm_bytes <= clip.hbm_bytes + passes * window


@pytest.mark.parametrize('target', TARGETS)
def test_skip_spikes_moves_at_most_a_tenth_more_memory_than_its_inner(target):
  skip = compiled(target, variants.SKIP)[0]
  inner = compiled(target, variants.AUTOCLIP)[0]
  assert skip.hbm_bytes <= 1.10 * inner.hbm_bytes


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


# A TPU step in miniature: a gradient staged into on-chip memory (S(1)),
# reduced there, then read again by the update; the ranks updated in place.
STAGED_PROGRAM = """
ENTRY %main (grads: f32[1000], params: f32[1000], ranks: s32[500]) -> f32[1000] {
  %grads = f32[1000]{0:T(1024)} parameter(0)
  %params = f32[1000]{0:T(1024)} parameter(1)
  %ranks = s32[500]{0:T(1024)} parameter(2)
  %one = s32[1]{0:T(128)} constant({1})
  %slot = s32[]{:T(128)} constant(3)
  %copy-start = (f32[1000]{0:T(1024)S(1)}, f32[1000]{0:T(1024)}, u32[]{:S(2)}) copy-start(%grads)
  %copy-done = f32[1000]{0:T(1024)S(1)} copy-done(%copy-start)
  %norm_fusion = f32[]{:T(128)} fusion(%copy-done), kind=kLoop, calls=%norm, backend_config={"estimated_cycles":"70"}
  %dynamic_update_slice.0 = s32[500]{0:T(1024)} dynamic-update-slice(%ranks, %one, %slot)
  %update_fusion = f32[1000]{0:T(1024)} fusion(%params, %copy-done, %norm_fusion), kind=kLoop, calls=%update, backend_config={"estimated_cycles":"100"}
  ROOT %tuple = (f32[1000]{0:T(1024)}, s32[500]{0:T(1024)}) tuple(%update_fusion, %dynamic_update_slice.0)
}
"""


def test_hbm_bytes_count_a_staged_array_once_and_an_in_place_update_by_its_update():
  cost = compiled_cost.analyse(None, STAGED_PROGRAM)
  # The gradient read once into on-chip memory, not again by the kernels
  # that read it there; the params read and written; the norm written and
  # read; one int32 written into the ranks in place.
  assert cost.hbm_bytes == 4000 + 2 * 4000 + 2 * 4 + 2 * 4
  assert cost.copies == 1
  assert cost.largest_copy_bytes == 4000
  assert cost.kernels == 4
  assert cost.tpu_kernel_cycles == 70 + 100  # The copy runs beside them.
