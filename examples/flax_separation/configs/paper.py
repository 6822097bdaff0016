"""The paper's setting: 4 x 600 BLSTM, batch 25, 100 epochs (for a GPU).

Point it at WSJ0-2mix with
``--config.dataset=wsj0-2mix --config.data_dir=/path/to/wsj0-2mix``.
"""

import ml_collections

from examples.flax_separation.configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the paper's hyperparameters on top of the defaults."""
  config = default.get_config()
  config.num_train = 20000
  config.num_valid = 5000
  config.num_test = 3000
  config.num_layers = 4
  config.hidden_size = 600
  config.learning_rate = 1e-3
  config.batch_size = 25
  config.excerpt_frames = 400
  config.num_epochs = 100
  config.checkpoint_every_steps = 1000
  config.eval_batch_size = 25
  return config
