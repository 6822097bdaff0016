"""Default config: a small BLSTM on espeak2mix that trains on 2 CPU cores.

Two runs of it (AutoClip p=10 and no clipping, p=100) fit in about 15 minutes
on 2 CPU cores, data generation and evaluation included.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the default hyperparameters."""
  config = ml_collections.ConfigDict()
  # Data: 'espeak2mix' is generated under <workdir>/data on first use;
  # 'wsj0-2mix' and 'libri2mix' are read from data_dir.
  config.dataset = 'espeak2mix'
  config.data_dir = ''
  config.num_train = 2000
  config.num_valid = 100
  config.num_test = 200
  config.data_seed = 0
  # Model: BLSTM layers x units per direction (the paper: 4 x 600).
  config.num_layers = 2
  config.hidden_size = 300
  # Loss: a key of loss_registry.LOSSES (AutoClip eqs. 4-8).
  config.loss = 'mi'
  # Length of each time-frequency embedding of 'dc', 'wkm' and 'chimera'.
  config.embedding_dim = 20
  # Weight of the mask-inference loss in 'chimera'.
  config.chimera_alpha = 0.75
  # Optimisation.
  config.learning_rate = 1e-3
  config.batch_size = 4
  config.excerpt_frames = 400
  config.num_epochs = 1
  config.autoclip_percentile = 10.0
  config.autoclip_max_history = 100_000
  # AutoClip's warm-up: no clipping until this many norms are recorded (the
  # paper: 0).
  config.autoclip_min_history = 0
  config.seed = 0
  # Bookkeeping.
  config.checkpoint_every_steps = 100
  # Metrics are fetched from the device (and the loop waits for a step) only
  # every this many steps, and before each checkpoint.
  config.log_every_steps = 50
  config.eval_batch_size = 8
  config.num_example_wavs = 3
  return config
