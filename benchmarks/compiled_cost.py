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
* HBM bytes: the operands and results of the entry's kernels that live in
  the device's main memory (an in-place dynamic-update-slice counts its
  update only). XLA:TPU stages some arrays through on-chip memory (VMEM,
  memory space ``S(1)`` in the layouts) with asynchronous copies; those
  count once, on their HBM side, and the kernels that read the staged
  array read no HBM for it;
* on TPU, XLA's cost analysis: its ``bytes accessed`` counts the staging
  copies' on-chip side too, and its cost model's time is those bytes at the
  chip's bandwidth (the fraction of a negative ``optimal_seconds``, which
  large programs report); and the sum of the compiler's own cycle estimates
  for the entry's kernels (``estimated_cycles``), which do not count the
  staging copies, as they run beside the kernels;
* the ratios of HBM bytes to the fixed clip, to Adam alone, and to a floor:
  the fixed clip's plus one read and one write of the variant's windows
  (``history`` and ``ranks``), which matters where the windows are as large
  as the params; on TPU, also the cost model's and the cycles' ratios to
  the fixed clip.

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
_ARRAY = re.compile(
  r'\b(?P<dtype>pred|[suf]\d+|bf16)\[(?P<dims>[\d,]*)\](?:\{(?P<layout>[^}]*)\})?'
)
_ASYNC_MOVES = {'copy-start': 'copy-done', 'slice-start': 'slice-done'}
_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')


@dataclasses.dataclass
class ProgramCost:
  """What one compiled step does; see the module docstring."""

  kernels: int
  while_loops: int
  copies: int
  largest_copy_bytes: int
  hbm_bytes: int
  tpu_bytes_accessed: float | None = None
  tpu_seconds: float | None = None
  tpu_kernel_cycles: int | None = None


def _bytes_of(shape: str, in_hbm_only: bool = False) -> int:
  """Bytes of every array in an HLO shape (a tuple counts all its parts).

  With ``in_hbm_only``, arrays whose layout names another memory space
  (``S(n)``: XLA:TPU's on-chip memories) count nothing.
  """
  total = 0
  for array in _ARRAY.finditer(shape):
    if in_hbm_only and 'S(' in (array['layout'] or ''):
      continue
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


def _operands(match: re.Match) -> list[str]:
  return re.findall(r'%([\w.-]+)', match['operands'])


def _destinations(entry: list[re.Match]) -> dict[str, str]:
  """The shape each asynchronous copy or slice writes, by its start's name."""
  return {
    _operands(match)[0]: match['shape']
    for match in entry
    if match['opcode'] in _ASYNC_MOVES.values()
  }


def _hbm_bytes(entry: list[re.Match], kernels: list[re.Match]) -> int:
  """HBM bytes read and written by ``kernels``; see the module docstring."""
  shapes = {match['name']: match['shape'] for match in entry}
  moved_to = _destinations(entry)
  total = 0
  for match in kernels:
    operands = _operands(match)
    if match['opcode'] in _ASYNC_MOVES:
      # Read at the source, written at the destination: each end in HBM
      # moves the destination's bytes through it.
      destination = moved_to[match['name']]
      ends_in_hbm = bool(_bytes_of(shapes[operands[0]], True)) + bool(
        _bytes_of(destination, True)
      )
      total += ends_in_hbm * _bytes_of(destination)
    elif 'dynamic_update_slice' in match['name'] and len(operands) > 1:
      total += 2 * _bytes_of(shapes.get(operands[1], ''), True)
    else:
      total += _bytes_of(match['shape'], True) + sum(
        _bytes_of(shapes.get(operand, ''), True) for operand in operands
      )
  return total


def analyse(compiled, hlo_text: str) -> ProgramCost:
  """Reads a compiled program's kernels, loops, copies and bytes.

  Args:
    compiled: the compiled TPU program, for its cost analysis; or None.
    hlo_text: its optimised HLO (``compiled.as_text()``).

  Returns:
    A :class:`ProgramCost`; the cost analysis's fields are None without
    ``compiled``, and the cycles without the TPU compiler's estimates.
  """
  entry = _entry(hlo_text)
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
  moved_to = _destinations(entry)
  cost = ProgramCost(
    kernels=len(kernels),
    while_loops=len(re.findall(r' while\(', hlo_text)),
    copies=len(copies),
    largest_copy_bytes=max(
      (
        _bytes_of(moved_to.get(match['name'], match['shape']))
        for match in copies
      ),
      default=0,
    ),
    hbm_bytes=_hbm_bytes(entry, kernels),
  )
  cycles = [
    int(cycles)
    for match in kernels
    if match['opcode'] not in _ASYNC_MOVES
    for cycles in _CYCLES.findall(match.string)
  ]
  if cycles:
    cost.tpu_kernel_cycles = sum(cycles)
  if compiled is not None:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    seconds = analysis['optimal_seconds']
    cost.tpu_seconds = seconds - math.floor(seconds) if seconds < 0 else seconds
    cost.tpu_bytes_accessed = analysis['bytes accessed']
  return cost


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
  on_tpu = target in TPU_TOPOLOGIES
  device = target_device(target)
  header = (
    '| params, window | variant | kernels | loops | copies (largest, MB) '
    '| HBM MB | vs clip_by_global_norm | vs Adam alone | vs floor |'
  )
  if on_tpu:
    header += (
      ' TPU cost model (µs) | cost model vs clip | kernel cycles vs clip |'
    )
  lines = [header, '|---' * header.count(' |') + '|']
  for case in cases:
    num_params, max_history = map(variants.parse_count, case.split('/'))
    params = abstract_model(num_params)
    transforms = variants.variants(max_history)
    costs = {
      name: step_cost(tx, params, device) for name, tx in transforms.items()
    }
    clip, adam = costs[variants.BASELINE], costs[variants.ADAM]
    for name, cost in costs.items():
      floor = clip.hbm_bytes + 2 * window_bytes(transforms[name], params)
      line = (
        f'| {case} | {name} | {cost.kernels} | {cost.while_loops} | '
        f'{cost.copies} ({cost.largest_copy_bytes / 1e6:.2f}) | '
        f'{cost.hbm_bytes / 1e6:.1f} | '
        f'{cost.hbm_bytes / clip.hbm_bytes:.3f}x | '
        f'{cost.hbm_bytes / adam.hbm_bytes:.3f}x | '
        f'{cost.hbm_bytes / floor:.3f}x |'
      )
      if on_tpu:
        line += (
          f' {cost.tpu_seconds * 1e6:.1f} | '
          f'{cost.tpu_seconds / clip.tpu_seconds:.3f}x | '
          f'{cost.tpu_kernel_cycles / clip.tpu_kernel_cycles:.3f}x |'
        )
      lines.append(line)
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
