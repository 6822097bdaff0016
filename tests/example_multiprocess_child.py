"""Times the example's training step as one process of a job.

RESULTS.md's measurement of 2 processes of 2 CPU devices against 1 process
of 4: the default config's network, trained with ``train.training_loop``
on an espeak2mix set of 200 training mixtures for 2 epochs of 25 steps.
Prints, as JSON, this process's seconds per step after the
first ``WARMUP_STEPS`` (which compile) and its peak resident memory.

Usage: python -m tests.example_multiprocess_child DATA_DIR NUM_PROCESSES
  PROCESS_ID COORDINATOR_ADDRESS (RESULTS.md gives the commands).
"""

import json
import resource
import sys
import time

import jax

from examples.flax_separation import input_pipeline
from examples.flax_separation import optimization
from examples.flax_separation import train
from examples.flax_separation.configs import default
from tests.multiprocess_child import join_processes

WARMUP_STEPS = 5


def main(data_dir, num_processes, process_id, coordinator_address):
  join_processes(num_processes, process_id, coordinator_address)
  config = default.get_config()
  config.update(
    data_dir=data_dir, num_train=200, num_valid=2, num_test=2, num_epochs=2
  )
  splits = input_pipeline.load_splits(config, data_dir)
  model = train.create_model(config)
  optimizer = optimization.create_optimizer(
    model,
    config,
    input_pipeline.num_training_steps(len(splits['train']), config),
  )
  for step in train.training_loop(model, optimizer, splits['train'], config):
    if step.number == WARMUP_STEPS:
      jax.block_until_ready(step.metrics)
      started = time.perf_counter()
  jax.block_until_ready(step.metrics)
  seconds = time.perf_counter() - started
  print(
    json.dumps(
      {
        'process': process_id,
        'processes': num_processes,
        'local_devices': jax.local_device_count(),
        'steps_timed': step.number - WARMUP_STEPS,
        'seconds_per_step': round(seconds / (step.number - WARMUP_STEPS), 4),
        'peak_rss_mib': round(
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ),
      }
    )
  )


if __name__ == '__main__':
  main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
