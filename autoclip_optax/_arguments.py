"""Checks of the transforms' arguments, raised at construction in their terms.

A hyperparameter may be a traced array (under ``optax.inject_hyperparams``):
only values known now are checked; traced ones are clamped where used.
"""

import numbers

import jax
import numpy as np


def _is_concrete_number(value) -> bool:
  """A real scalar known now: a Python or NumPy number, or a 0-d array."""
  return isinstance(value, numbers.Real) or (
    isinstance(value, (jax.Array, np.ndarray))
    and value.ndim == 0
    and not isinstance(value, jax.core.Tracer)
    and np.issubdtype(value.dtype, np.number)
    and not np.issubdtype(value.dtype, np.complexfloating)
  )


def check_percentile(name: str, value) -> None:
  """Raises unless ``value`` is a real number in [0, 100] or a tracer."""
  if _is_concrete_number(value) and not isinstance(value, bool):
    number = float(value)
    if not 0.0 <= number <= 100.0:  # Also rejects NaN.
      raise ValueError(f'{name} must be in [0, 100], got {number}')
  elif not isinstance(value, jax.core.Tracer):
    raise TypeError(
      f'{name} must be a real number in [0, 100], got {value!r} of type '
      f'{type(value).__name__}'
    )


def check_positive_number(name: str, value) -> None:
  """Raises unless ``value`` is a finite real number above 0 or a tracer."""
  if _is_concrete_number(value) and not isinstance(value, bool):
    number = float(value)
    if not 0.0 < number < float('inf'):  # Also rejects NaN.
      raise ValueError(f'{name} must be finite and above 0, got {number}')
  elif not isinstance(value, jax.core.Tracer):
    raise TypeError(
      f'{name} must be a real number above 0, got {value!r} of type '
      f'{type(value).__name__}'
    )


def check_int(
  name: str, value, low: int, high: int, traceable: bool = False
) -> None:
  """Raises unless ``value`` is an int (not a bool) in [low, high].

  Args:
    name: the argument's name, for the message.
    value: the argument.
    low: the smallest allowed value.
    high: the largest allowed value.
    traceable: whether a 0-d integer array (checked if concrete) or a tracer
      (not checked) is allowed too, as :func:`optax.inject_hyperparams`
      passes for numeric arguments not named in ``static_args``.
  """
  if traceable and isinstance(value, jax.core.Tracer):
    return
  if (
    traceable
    and isinstance(value, (jax.Array, np.ndarray))
    and (value.ndim == 0 and np.issubdtype(value.dtype, np.integer))
  ):
    value = int(value)
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(
      f'{name} must be an int, got {value!r} of type {type(value).__name__}'
    )
  if not low <= int(value) <= high:
    raise ValueError(f'{name} must be in [{low}, {high}], got {value}')


def check_scalar(name: str, value) -> None:
  """Raises unless ``value`` is a scalar; traced values included.

  ``optax.inject_hyperparams`` lets a hyperparameter be replaced between
  steps, and an array of another shape would broadcast through the state.
  """
  shape = np.shape(value)
  if shape:
    raise ValueError(f'{name} must be a scalar, got an array of shape {shape}')
