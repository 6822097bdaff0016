"""AutoClip adaptive gradient clipping as an Optax gradient transformation."""

from autoclip_optax._autoclip import AutoClipState
from autoclip_optax._autoclip import DEFAULT_MAX_HISTORY
from autoclip_optax._autoclip import autoclip

__version__ = '0.1.0'

__all__ = (
    'AutoClipState',
    'DEFAULT_MAX_HISTORY',
    'autoclip',
)
