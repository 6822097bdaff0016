"""The paper's setting: 4 x 600 BLSTM, batch 25, 100 epochs (for a GPU).

Point it at WSJ0-2mix with
``--config.dataset=wsj0-2mix --config.data_dir=/path/to/wsj0-2mix``.
"""

import ml_collections

from examples.flax_separation.configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the paper's hyperparameters on top of the defaults."""
  config = default.get_config()
  # WSJ0-2mix's counts; 4 x 600 BLSTM; Adam at 1e-3; batches of 25
  # 400-frame excerpts for 100 epochs (sections 4.2 and 4.3).
  config.update(
    num_train=20000,
    num_valid=5000,
    num_test=3000,
    num_layers=4,
    hidden_size=600,
    learning_rate=1e-3,
    batch_size=25,
    excerpt_frames=400,
    num_epochs=100,
  )
  # The paper mentions no parameter average: the trained network is tested.
  config.update(param_average_decay=0.0)
  config.update(checkpoint_every_steps=1000, eval_batch_size=25)
  return config
