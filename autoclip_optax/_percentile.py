"""The percentile of a window, as ``np.percentile`` computes it.

NumPy's default ("linear") percentile of ``n`` values sits at the virtual
index ``rank = percentile / 100 * (n - 1)`` and interpolates between the two
order statistics around it. In float32, ``rank`` for a window of a million
values is only known to about 0.06, which moves the result by 6% of the gap
between neighbours: far off ``np.percentile`` where a spike sits next to the
percentile. ``percentile * (n - 1)`` is therefore split into an exact integer
and a fraction below one, using products that float32 holds exactly.
"""

import jax
import jax.numpy as jnp

# Windows up to 2**24 slots keep ``n - 1`` and the partial products exact.
MAX_WINDOW = 2**24
_LOW_BITS = 12
_LOW_MASK = (1 << _LOW_BITS) - 1


def _split_float(value: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Splits a float32 into two parts of at most 12 significant bits each."""
  bits = jax.lax.bitcast_convert_type(value, jnp.uint32)
  high_bits = bits & jnp.uint32(0xFFFFFFFF ^ _LOW_MASK)
  high = jax.lax.bitcast_convert_type(high_bits, jnp.float32)
  return high, value - high


def _split_int(value: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Splits a non-negative int32 below 2**24 into two 12-bit float32 parts."""
  high = (value >> _LOW_BITS) << _LOW_BITS
  return high.astype(jnp.float32), (value & _LOW_MASK).astype(jnp.float32)


def _rank(
  percentile: jax.Array, last_index: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Returns ``floor(rank)`` and ``rank - floor(rank)`` for the virtual index.

  Args:
    percentile: float32 scalar in [0, 100].
    last_index: int32 scalar ``n - 1``, in [0, 2**24).

  Returns:
    The lower order statistic's index (int32) and the interpolation weight of
    the upper one (float32 in [0, 1)).
  """
  whole = jnp.floor(percentile)
  fraction = percentile - whole  # Exact.
  # 100 * rank = whole * last_index + fraction * last_index.
  scaled_whole = whole.astype(jnp.int32) * last_index  # < 100 * 2**24 < 2**31.
  scaled_int = scaled_whole
  scaled_fraction = jnp.float32(0)
  for fraction_part in _split_float(fraction):
    for index_part in _split_int(last_index):
      product = fraction_part * index_part  # 12 x 12 bits: exact in float32.
      product_floor = jnp.floor(product)
      scaled_int = scaled_int + product_floor.astype(jnp.int32)
      scaled_fraction = scaled_fraction + (product - product_floor)
  carry = jnp.floor(scaled_fraction)
  scaled_int = scaled_int + carry.astype(jnp.int32)
  scaled_fraction = scaled_fraction - carry
  lower = scaled_int // 100
  weight = ((scaled_int % 100).astype(jnp.float32) + scaled_fraction) / 100
  return lower, weight


def ranks_and_weight(
  percentile: jax.Array, num_filled: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Where the ``percentile``-th percentile of ``num_filled`` values sits.

  Args:
    percentile: float32 in [0, 100]; any shape.
    num_filled: int32 in [0, 2**24], how many values there are; same shape.

  Returns:
    The ranks (int32) of the two order statistics to interpolate between,
    and the weight (float32 in [0, 1)) of the upper one.
  """
  last_index = jnp.maximum(num_filled - 1, 0).astype(jnp.int32)
  lower, weight = _rank(jnp.asarray(percentile, jnp.float32), last_index)
  return lower, jnp.minimum(lower + 1, last_index), weight


def interpolate(
  lower_value: jax.Array,
  upper_value: jax.Array,
  weight: jax.Array,
  num_filled: jax.Array,
) -> jax.Array:
  """The percentile from the two order statistics around it.

  Matches ``np.percentile`` (linear interpolation, NumPy's default) to
  float32 precision.

  Args:
    lower_value: the order statistic of the lower rank.
    upper_value: that of the upper rank.
    weight: the upper one's weight, from :func:`ranks_and_weight`.
    num_filled: how many values there are.

  Returns:
    The percentile; ``+inf`` where ``num_filled`` is 0.
  """
  # NumPy's _lerp: interpolate from the nearer end for monotone rounding.
  gap = upper_value - lower_value
  value = jnp.where(
    weight >= 0.5, upper_value - gap * (1 - weight), lower_value + gap * weight
  )
  return jnp.where(num_filled > 0, value, jnp.inf)
