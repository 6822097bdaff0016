"""The example's steps on 8 host devices against 1; run by a test.

Usage: python -m tests.example_data_parallel_child <scratch directory>
(started by test_example_data_parallel.py with 8 forced host devices).
Exits non-zero, with the assertion, when the results differ.
"""

import pathlib
import sys

from flax import nnx
import jax
import numpy as np
import soundfile as sf

from examples.flax_separation import configs
from examples.flax_separation import evaluation
from examples.flax_separation import input_pipeline
from examples.flax_separation import optimization
from examples.flax_separation import sharding
from examples.flax_separation import spectral
from examples.flax_separation import train
from examples.flax_separation.configs import default

NUM_DEVICES = 8
NUM_STEPS = 3
NUM_SAMPLES = 39 * spectral.HOP_LENGTH


def tiny_config():
  config = default.get_config()
  config.hidden_size = 8
  config.num_layers = 1
  config.batch_size = NUM_DEVICES
  return config


def random_batches(rng):
  sources = rng.normal(size=(NUM_STEPS, NUM_DEVICES, 2, NUM_SAMPLES))
  sources = sources.astype(np.float32)
  return [(batch.sum(axis=1), batch) for batch in sources]


def train_on(mesh, batches):
  """Metrics of each step, and the final params, training on ``mesh``."""
  config = tiny_config()
  model = train.create_model(config)
  optimizer = optimization.create_optimizer(model, config, NUM_STEPS)
  sharding.replicate(mesh, model, optimizer)
  records = []
  for local_rows in batches:
    mixture, sources = sharding.shard_batch(mesh, local_rows)
    assert len({shard.device for shard in mixture.addressable_shards}) == (
      mesh.size
    )
    assert mixture.addressable_shards[0].data.shape == (
      NUM_DEVICES // mesh.size,
      NUM_SAMPLES,
    )
    records.append(
      jax.device_get(train.train_step(model, optimizer, mixture, sources))
    )
  state = jax.tree.leaves(nnx.state((model, optimizer)))
  assert all(leaf.sharding.is_fully_replicated for leaf in state)
  assert all(len(leaf.sharding.device_set) == mesh.size for leaf in state)
  return model, records, jax.device_get(nnx.state(model, nnx.Param))


def write_test_split(directory, lengths):
  rng = np.random.default_rng(1)
  for index, length in enumerate(lengths):
    sources = 0.1 * rng.normal(size=(2, length))
    for folder, samples in zip(
      ('mix', 's1', 's2'), (sources.sum(axis=0), *sources)
    ):
      (directory / 'tt' / folder).mkdir(parents=True, exist_ok=True)
      sf.write(
        directory / 'tt' / folder / f'u{index}.wav',
        samples,
        spectral.SAMPLE_RATE,
        subtype='FLOAT',
      )
  return input_pipeline.load_split(directory, 'test')


def main(scratch):
  assert jax.device_count() == NUM_DEVICES, jax.devices()
  one = sharding.data_parallel_mesh(jax.devices()[:1])
  eight = sharding.data_parallel_mesh()
  assert eight.size == NUM_DEVICES
  batches = random_batches(np.random.default_rng(0))
  model_one, records_one, params_one = train_on(one, batches)
  model_eight, records_eight, params_eight = train_on(eight, batches)
  assert np.isfinite(records_one[-1]['threshold'])
  for record_one, record_eight in zip(records_one, records_eight):
    for key in ('loss', 'grad_norm', 'threshold', 'step_size'):
      np.testing.assert_allclose(
        record_eight[key], record_one[key], rtol=2e-5, err_msg=key
      )
    np.testing.assert_array_equal(
      record_eight['clipped'], record_one['clipped']
    )
  # Adam divides each gradient element by its own scale, so float32 rounding
  # in a near-zero element moves its parameter by up to a hundredth of the
  # learning rate (1e-3).
  jax.tree.map(
    lambda eight_leaf, one_leaf: np.testing.assert_allclose(
      eight_leaf, one_leaf, rtol=2e-5, atol=2e-5
    ),
    params_eight,
    params_one,
  )

  # Eleven mixtures in batches of 8: the last batch has 5 padding rows.
  split = write_test_split(
    pathlib.Path(scratch), [300 + 37 * i for i in range(11)]
  )
  scores_one = evaluation.evaluate(model_one, split, NUM_DEVICES, mesh=one)
  scores_eight = evaluation.evaluate(
    model_eight, split, NUM_DEVICES, mesh=eight
  )
  for score_one, score_eight in zip(scores_one, scores_eight):
    assert score_one.shape == (11, 2) and np.isfinite(score_one).all()
    np.testing.assert_allclose(score_eight, score_one, rtol=1e-3, atol=1e-3)

  config = tiny_config()
  config.batch_size = 12
  try:
    configs.validate(config)
  except ValueError as error:
    assert str(error) == (
      'config.batch_size (12) must divide by the number of devices (8): '
      'each device takes an equal share of every batch'
    ), error
  else:
    raise AssertionError('a batch of 12 on 8 devices was accepted')


if __name__ == '__main__':
  main(sys.argv[1])
  print('ok')
