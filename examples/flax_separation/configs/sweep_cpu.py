"""The sweep's CPU default: a 1 x 128 BLSTM, one epoch of 500 steps a cell.

The 35 cells of ``sweep.py`` train for about two hours in all on 2 CPU
cores (evaluation on top). Each cell sees 2,000 excerpts of 400 frames, the
paper's sequence length, in batches of 4.
"""

import ml_collections

from examples.flax_separation.configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the default hyperparameters with a smaller, shorter run."""
  config = default.get_config()
  config.update(
    num_train=2000,
    num_layers=1,
    hidden_size=128,
    batch_size=4,
    excerpt_frames=400,
    num_epochs=1,
    checkpoint_every_steps=100,
  )
  # Each cell evaluates its trained network, as the paper does for Table 1.
  config.update(param_average_decay=0.0)
  return config
