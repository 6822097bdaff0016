"""What a TPU or GPU runs for each optimizer step, compiled on any machine.

Run: python -m benchmarks.compiled_cost --target=tpu-v5e [--cases=1M/100k]

XLA compiles ahead of time for a device that is not there: a TPU topology
(libtpu, from ``jax[tpu]``) or an NVIDIA GPU described by a target config
(the CUDA plugin; the specs are in ``gpu_targets/``). For every variant of
``variants.py``, a jitted step (update, Adam, apply_updates) with the params
and optimizer state donated is compiled for the target, and the optimised
program is read:

* kernels: the entry computation's fusions, and its other instructions
  that work on arrays (copies, custom calls, collectives, ...): not tuples,
  parameters, constants, bitcasts, the ends of asynchronous copies, or the
  scalar instructions that XLA:TPU leaves outside fusions;
* while loops anywhere in the program: a loop runs serially on the device;
* copies in the entry computation, and the largest one's size;
* bytes: on TPU, XLA's cost analysis (``bytes accessed``), and its cost
  model's time (the fraction of a negative ``optimal_seconds``, which large
  programs report); on GPU, the operands and results of the entry's kernels
  (an in-place dynamic-update-slice counts its update only);
* the ratios of bytes (TPU: of time) to the fixed clip, to Adam alone, and
  to a floor: the fixed clip's plus one read and one write of the variant's
  windows (``history`` and ``ranks``), which matters where the windows are
  as large as the params.

These are compiled structure and cost-model estimates, not measurements.
Install the tools with ``bash scripts/setup_venv.sh --aot`` and run with
``JAX_PLATFORMS=cpu`` so that JAX does not look for a TPU on this machine.
"""

import argparse
import dataclasses
import math
import pathlib
import re

import jax
import numpy as np
import optax
from jax.experimental import topologies
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from benchmarks import variants

GPU_TARGETS = pathlib.Path(__file__).parent / 'gpu_targets'
TPU_TOPOLOGIES = {'tpu-v5e': 'v5e:2x2', 'tpu-v6e': 'v6e:2x2'}
TARGETS = (*TPU_TOPOLOGIES, 'h100', 'h200', 'cpu')
DEFAULT_CASES = ('1M/100k', '10M/1M', '10M/100k')

# Entry instructions that are bookkeeping, not work on the device.
_NOT_KERNELS = {
  'parameter',
  'constant',
  'tuple',
  'get-tuple-element',
  'bitcast',
  'copy-done',
  'slice-done',
  'all-reduce-done',
  'all-gather-done',
  'collective-permute-done',
  'after-all',
  'partition-id',
  'replica-id',
}
_INSTRUCTION = re.compile(
  r'^\s*(?:ROOT )?%(?P<name>[\w.-]+) = (?P<shape>.*?) '
  r'(?P<opcode>[a-z][\w-]*)\((?P<operands>[^)]*)\)'
)
_ARRAY = re.compile(r'\b(?P<dtype>pred|[suf]\d+|bf16)\[(?P<dims>[\d,]*)\]')


@dataclasses.dataclass
class ProgramCost:
  """What one compiled step does; see the module docstring."""

  kernels: int
  while_loops: int
  copies: int
  largest_copy_bytes: int
  bytes: float
  tpu_seconds: float | None


def _bytes_of(shape: str) -> int:
  """Bytes of every array in an HLO shape (a tuple counts all its parts)."""
  total = 0
  for array in _ARRAY.finditer(shape):
    dtype = array['dtype']
    width = 1 if dtype == 'pred' else int(re.sub(r'\D', '', dtype)) // 8
    dims = [int(dim) for dim in array['dims'].split(',') if dim]
    total += width * math.prod(dims)
  return total


def _entry(hlo_text: str) -> list[re.Match]:
  """The instructions of the entry computation."""
  body = hlo_text[hlo_text.index('\nENTRY') :]
  body = body[: body.index('\n}')]
  return [
    match
    for line in body.splitlines()[1:]
    if (match := _INSTRUCTION.match(line))
  ]


def analyse(compiled, hlo_text: str) -> ProgramCost:
  """Reads a compiled program's kernels, loops, copies and bytes."""
  entry = _entry(hlo_text)
  shape_bytes = {match['name']: _bytes_of(match['shape']) for match in entry}
  # Scalar instructions outside fusions run on the TPU's scalar unit.
  kernels = [
    match
    for match in entry
    if match['opcode'] not in _NOT_KERNELS
    and (match['opcode'] == 'fusion' or _bytes_of(match['shape']) > 8)
  ]
  copies = [
    match for match in entry if match['opcode'] in ('copy', 'copy-start')
  ]
  kernel_bytes = 0
  for match in kernels:
    operands = re.findall(r'%([\w.-]+)', match['operands'])
    if 'dynamic_update_slice' in match['name'] and len(operands) > 1:
      kernel_bytes += 2 * shape_bytes.get(operands[1], 0)
    else:
      kernel_bytes += shape_bytes[match['name']] + sum(
        shape_bytes.get(operand, 0) for operand in operands
      )
  tpu_seconds = None
  if compiled is not None:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    seconds = analysis['optimal_seconds']
    tpu_seconds = seconds - math.floor(seconds) if seconds < 0 else seconds
    kernel_bytes = analysis['bytes accessed']
  return ProgramCost(
    kernels=len(kernels),
    while_loops=len(re.findall(r' while\(', hlo_text)),
    copies=len(copies),
    largest_copy_bytes=max(
      (
        _bytes_of(match['shape'])
        // (2 if match['opcode'] == 'copy-start' else 1)
        for match in copies
      ),
      default=0,
    ),
    bytes=kernel_bytes,
    tpu_seconds=tpu_seconds,
  )


def target_device(target: str):
  """One device of ``target``, for compiling ahead of time."""
  if target in TPU_TOPOLOGIES:
    return topologies.get_topology_desc(
      platform='tpu', topology_name=TPU_TOPOLOGIES[target]
    ).devices[0]
  if target in ('h100', 'h200'):
    config = (GPU_TARGETS / f'{target}.txtpb').read_text()
    return topologies.get_topology_desc(
      platform='cuda', topology_name='', target_config=config, topology='1x1x1'
    ).devices[0]
  if target == 'cpu':
    return jax.devices('cpu')[0]
  raise ValueError(f'target must be one of {TARGETS}, got {target!r}')


def compile_step(tx: optax.GradientTransformation, params, device):
  """A donated step of ``tx`` compiled for ``device``; returns the program."""
  replicated = NamedSharding(
    Mesh(np.array([device]), ('devices',)), PartitionSpec()
  )

  def on_device(tree):
    return jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(
        leaf.shape, leaf.dtype, sharding=replicated
      ),
      tree,
    )

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  shapes = jax.eval_shape(lambda: params)
  return (
    jax.jit(step, donate_argnums=(0, 1))
    .lower(
      on_device(shapes),
      on_device(jax.eval_shape(tx.init, shapes)),
      on_device(shapes),
    )
    .compile()
  )


def step_cost(tx, params, device) -> ProgramCost:
  """:func:`analyse` of ``tx``'s compiled step."""
  compiled = compile_step(tx, params, device)
  on_tpu = device.platform == 'tpu'
  return analyse(compiled if on_tpu else None, compiled.as_text())


def window_bytes(tx, params) -> int:
  """Bytes of the windows (``history`` and ``ranks``) in ``tx``'s state."""
  state = jax.eval_shape(tx.init, params)
  return sum(
    leaf.size * leaf.dtype.itemsize
    for field in ('history', 'ranks')
    for _, leaf in optax.tree_utils.tree_get_all_with_path(state, field)
  )


def abstract_model(num_params: int):
  """Shapes of :func:`variants.model`'s params, without allocating them."""
  sizes = np.diff(
    np.linspace(0, num_params, variants.NUM_LEAVES + 1).astype(int)
  )
  return {
    f'leaf_{index}': jax.ShapeDtypeStruct((int(size),), np.float32)
    for index, size in enumerate(sizes)
  }


def report(target: str, cases) -> list[str]:
  """The report's Markdown table, one row per case and variant."""
  device = target_device(target)
  on_tpu = device.platform == 'tpu'
  measure = 'TPU cost model (µs)' if on_tpu else 'MB read + written'
  lines = [
    f'| params, window | variant | kernels | loops | copies '
    f'(largest, MB) | {measure} | vs clip_by_global_norm '
    f'| vs Adam alone | vs floor |',
    '|---' * 9 + '|',
  ]
  for case in cases:
    num_params, max_history = map(variants.parse_count, case.split('/'))
    params = abstract_model(num_params)
    transforms = variants.variants(max_history)
    costs = {
      name: step_cost(tx, params, device) for name, tx in transforms.items()
    }
    value = {
      name: cost.tpu_seconds if on_tpu else cost.bytes
      for name, cost in costs.items()
    }
    clip = costs[variants.BASELINE]
    for name, cost in costs.items():
      floor = value[variants.BASELINE] * (
        1 + 2 * window_bytes(transforms[name], params) / clip.bytes
      )
      figure = (
        f'{cost.tpu_seconds * 1e6:.1f}' if on_tpu else f'{cost.bytes / 1e6:.1f}'
      )
      lines.append(
        f'| {case} | {name} | {cost.kernels} | {cost.while_loops} | '
        f'{cost.copies} ({cost.largest_copy_bytes / 1e6:.2f}) | {figure} | '
        f'{value[name] / value[variants.BASELINE]:.3f}x | '
        f'{value[name] / value[variants.ADAM]:.3f}x | '
        f'{value[name] / floor:.3f}x |'
      )
  return lines


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--target', choices=TARGETS, default='tpu-v5e')
  parser.add_argument(
    '--cases',
    default=','.join(DEFAULT_CASES),
    help='comma-separated params/window pairs',
  )
  args = parser.parse_args()
  print(
    f'jax {jax.__version__}, optax {optax.__version__}, compiled for '
    f'{args.target} ({target_device(args.target).device_kind})'
  )
  print()
  print('\n'.join(report(args.target, args.cases.split(','))))


if __name__ == '__main__':
  main()
