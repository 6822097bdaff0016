"""Default config: a 2 x 128 BLSTM on espeak2mix, sized for 2 CPU cores.

RESULTS.md says what was measured to choose these values.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the default hyperparameters."""
  config = ml_collections.ConfigDict()
  # Data set: 'espeak2mix' (generated on first use), 'wsj0-2mix', 'libri2mix'.
  config.dataset = 'espeak2mix'
  # Where the data set is; '' generates espeak2mix under <workdir>/data.
  config.data_dir = ''
  # espeak2mix's mixtures per split.
  config.num_train = 4000
  config.num_valid = 100
  config.num_test = 200
  # espeak2mix's seed: speakers, sentences and mixing.
  config.data_seed = 0
  # BLSTM layers, and units per direction (the paper: 4 x 600).
  config.num_layers = 2
  config.hidden_size = 128
  # Batch-normalise each frequency of the input log magnitude (as nussl).
  config.normalize_input = True
  # Loss: a key of loss_registry.LOSSES (the paper's eqs. 4-8).
  config.loss = 'mi'
  # Length of each time-frequency embedding of 'dc', 'wkm' and 'chimera'.
  config.embedding_dim = 20
  # Weight of the mask-inference loss in 'chimera'.
  config.chimera_alpha = 0.75
  # Adam's learning rate.
  config.learning_rate = 1e-3
  # Share of the steps after which the rate follows a half cosine to 0;
  # 1.0 keeps it constant, as the paper trains.
  config.learning_rate_decay_start = 1.0
  # Decay of the parameter average that runs validate, keep and test
  # (averaging.py); 0 uses the trained network, as the paper does.
  config.param_average_decay = 0.99
  # Training excerpts per step.
  config.batch_size = 8
  # STFT frames per training excerpt (the paper: 400).
  config.excerpt_frames = 200
  # Passes over the training mixtures.
  config.num_epochs = 4
  # AutoClip: the percentile of the gradient norms clipped to; 100 never clips.
  config.autoclip_percentile = 10.0
  # AutoClip: gradient norms remembered.
  config.autoclip_max_history = 100_000
  # AutoClip: norms recorded before it clips (the paper: 0).
  config.autoclip_min_history = 0
  # Initialisation and batch order.
  config.seed = 0
  # Validate and checkpoint every this many steps, and at each epoch's end.
  config.checkpoint_every_steps = 500
  # Fetch the metrics from the device (and log them) every this many steps.
  config.log_every_steps = 50
  # Mixtures separated at once in validation and test.
  config.eval_batch_size = 8
  # Test mixtures written as WAVs with their separated sources.
  config.num_example_wavs = 3
  return config
