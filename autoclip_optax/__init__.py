"""AutoClip adaptive gradient clipping as an Optax gradient transformation."""

from autoclip_optax._autoclip import AutoClipState
from autoclip_optax._autoclip import DEFAULT_MAX_HISTORY
from autoclip_optax._autoclip import autoclip
from autoclip_optax._history import recorded_norms
from autoclip_optax._history import with_history
from autoclip_optax._skip_spikes import SkipSpikesState
from autoclip_optax._skip_spikes import skip_spikes

__version__ = '0.1.0'

__all__ = (
  'AutoClipState',
  'DEFAULT_MAX_HISTORY',
  'SkipSpikesState',
  'autoclip',
  'recorded_norms',
  'skip_spikes',
  'with_history',
)
