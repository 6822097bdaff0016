"""Times one training step of the example's BLSTM against `nnx.RNN`.

Both models are 2 x 300 BLSTM mask networks on a batch of 4 x 400 frames with
129 bins, each step being the example's own `train.train_step` (STFT, the
phase-sensitive mask loss, AutoClip and Adam), both with the batch-normalised
input. The baseline stacks `nnx.Bidirectional(nnx.RNN(nnx.OptimizedLSTMCell),
...)` layers; the other is `BLSTMNet` with a mask head. Steps of the two
alternate so that machine load affects both alike, and medians are reported.

Usage:
  python -m benchmarks.bench_blstm   # from the repository root
"""

import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

from examples.flax_separation import models
from examples.flax_separation import optimization
from examples.flax_separation import spectral
from examples.flax_separation import train
from examples.flax_separation.configs import default

BATCH_SIZE = 4
NUM_FRAMES = 400
HIDDEN_SIZE = 300
NUM_LAYERS = 2
NUM_SOURCES = 2
TIMED_STEPS = 10


class RNNMaskNet(nnx.Module):
  """`BLSTMNet` with a mask head, built from Flax's own recurrent modules."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.input_normalization = nnx.BatchNorm(
      spectral.NUM_FREQUENCIES, use_fast_variance=False, rngs=rngs
    )
    layer_inputs = [spectral.NUM_FREQUENCIES] + [2 * HIDDEN_SIZE] * (
      NUM_LAYERS - 1
    )
    self.blstm_layers = nnx.List(
      [
        nnx.Bidirectional(
          nnx.RNN(nnx.OptimizedLSTMCell(in_features, HIDDEN_SIZE, rngs=rngs)),
          nnx.RNN(nnx.OptimizedLSTMCell(in_features, HIDDEN_SIZE, rngs=rngs)),
        )
        for in_features in layer_inputs
      ]
    )
    self.mask_layer = nnx.Linear(
      2 * HIDDEN_SIZE, NUM_SOURCES * spectral.NUM_FREQUENCIES, rngs=rngs
    )

  def __call__(self, log_magnitude, *, use_running_average=False):
    features = self.input_normalization(
      log_magnitude, use_running_average=use_running_average
    )
    for blstm in self.blstm_layers:
      features = blstm(features)
    masks = jax.nn.sigmoid(self.mask_layer(features))
    masks = masks.reshape(features.shape[:2] + (NUM_SOURCES, -1))
    return models.Estimates(
      masks=jnp.transpose(masks, (0, 2, 1, 3)), embeddings=None
    )


def random_batch(key):
  """Returns a mixture of two noise sources, ``[B, T]`` and ``[B, 2, T]``."""
  num_samples = (NUM_FRAMES - 1) * spectral.HOP_LENGTH
  sources = jax.random.normal(key, (BATCH_SIZE, NUM_SOURCES, num_samples))
  return sources.sum(axis=1), sources


def main():
  mixture, sources = random_batch(jax.random.key(0))
  config = default.get_config()
  contenders = {
    'nnx.RNN + OptimizedLSTMCell': RNNMaskNet(rngs=nnx.Rngs(0)),
    'BLSTMNet': models.BLSTMNet(
      hidden_size=HIDDEN_SIZE, num_layers=NUM_LAYERS, rngs=nnx.Rngs(0)
    ),
  }
  optimizers = {
    name: optimization.create_optimizer(model, config, TIMED_STEPS + 1)
    for name, model in contenders.items()
  }
  step_seconds = {name: [] for name in contenders}

  def timed_step(name):
    start = time.perf_counter()
    metrics = train.train_step(
      contenders[name], optimizers[name], mixture, sources
    )
    jax.block_until_ready(metrics)
    return time.perf_counter() - start

  for name in contenders:
    print(f'{name}: compile + first step {timed_step(name):.1f} s')
  for _ in range(TIMED_STEPS):
    for name in contenders:
      step_seconds[name].append(timed_step(name))
  medians = {
    name: statistics.median(times) for name, times in step_seconds.items()
  }
  for name, median in medians.items():
    print(f'{name}: median {median:.3f} s per train step over {TIMED_STEPS}')
  baseline, fast = medians.values()
  print(f'speed-up of BLSTMNet over nnx.RNN: {baseline / fast:.2f}x')


if __name__ == '__main__':
  main()
