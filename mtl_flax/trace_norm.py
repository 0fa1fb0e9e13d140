"""Tensor trace norms of stacked task kernels, with the U V^T gradient of the nuclear norm.

For a shareable convolution, the T task kernels are stacked with the task axis last into a tensor
W of shape (kh, kw, cin, cout, T) (order N = 5), and one of three tensor trace norms couples them
(Yang & Hospedales, "Trace norm regularised deep multi-task learning", 2017):

* LAF (last-axis flattening): ``||W_(N)||_*``, the nuclear norm of the task-axis unfolding;
* Tucker: ``sum_{i=1..N} gamma_i ||W_(i)||_*`` over every mode-i unfolding
  ``W_(i) = moveaxis(W, i, 0).reshape(n_i, -1)``;
* TT (tensor train): ``sum_{k=1..N-1} gamma_k ||W_[k]||_*`` over the unfoldings
  ``W_[k] = W.reshape(n_1 ... n_k, n_{k+1} ... n_N)``.

The nuclear norm ``||M||_* = sum_i s_i(M)`` has the (sub)gradient ``U V^T`` of the thin SVD
``M = U diag(s) V^T``; ``nuclear_norm`` returns exactly that through a custom VJP instead of
differentiating through the SVD (whose JAX derivative divides by ``s_i^2 - s_j^2`` and is NaN for
the repeated zero singular values of, e.g., identical task kernels). Singular values below
``rtol * s_max`` are masked out of the gradient (the zero-matrix choice of the subgradient).

Three factorisations:

* ``'exact'``: a tall-skinny unfolding is reduced by QR first, so the SVD is of the small square
  R factor (LAPACK / cuSOLVER Householder QR and SVD; the reference).
* ``'gram'``: for ``M`` of shape (n, p) with n <= p, the eigendecomposition ``M M^T = U L U^T`` of
  the small n x n Gram matrix, then the re-projection ``B = U^T M``, ``s_i = ||B_i||`` (row norms)
  and ``V^T = diag(1/s) B``: the whole nuclear norm at the cost of two matrix products and one
  small ``eigh``, with no Householder QR of the long side. Rounding in the squared matrix
  perturbs ``U`` by about ``eps s_max^2 / gap``; the re-projected ``s_i`` and ``U V^T`` feel this
  only where eigenvectors of nearly equal ``L`` values mix, which matters only for singular values
  near ``sqrt(eps) s_max``. So where a kept singular value lies below ``10 sqrt(eps) s_max``
  (3.5e-3 in float32) the matrix is factorised by ``'exact'`` instead (``lax.cond``), and
  ``'gram'`` agrees with ``'exact'`` to float precision on every input; on the well-conditioned
  wide unfoldings of ResNet-34 kernels it runs 2-3x faster on CPU
  (``benchmarks/mtl_step.py`` prints both).
* ``'randomized'`` (Halko, Martinsson & Tropp 2011): Gaussian range finder with oversampling and
  power iterations, then the SVD of the small projected matrix. It estimates the sum of the top
  ``rank`` singular values (and the gradient is the matching ``U_r V_r^T``): a Ky Fan norm, which
  for a full-rank unfolding is smaller than the nuclear norm and leaves the trailing singular
  values unpenalised. Unfoldings whose smaller side is at most ``rank + oversample`` use the
  exact factorisation, which is then cheaper and exact.
* ``'newton_schulz'``: no factorisation at all, only matrix products (the accelerator path:
  cuSOLVER's ``eigh``/``svd`` run one matrix at a time at a few milliseconds each, while a
  ResNet-34 step takes tens). For ``M`` (n, p), n <= p, with Gram matrix ``G = M M^T`` and
  ``eps = smoothing * s``, ``s = ||G^2||_F^(1/2)`` (an upper bound of ``s_max^2`` within
  ``n^(1/4)``), the coupled Newton-Schulz iteration
  ``T = (3 I - Z Y) / 2, Y <- Y T, Z <- T Z`` from ``Y = (G + eps I) / s, Z = I`` converges
  quadratically to ``Z = s^(1/2) (G + eps I)^(-1/2)``. The gradient is then
  ``(G + eps I)^(-1/2) M = sum_i s_i / sqrt(s_i^2 + eps) u_i v_i^T``, the gradient of the
  smoothed nuclear norm ``sum_i sqrt(s_i^2 + eps)``: ``U V^T`` with the singular values below
  about ``sqrt(eps)`` (``1e-3`` to ``2.4e-3 s_max`` for n <= 1024 at the default
  ``smoothing = 1e-6``) masked
  softly instead of at ``1e3 eps s_max``. The value is
  ``tr((G + eps I)^(-1/2) G) = sum_i s_i^2 / sqrt(s_i^2 + eps)``, the nuclear norm less at most
  ``eps / (2 s_i)`` per singular value (0 for a zero one). The shift keeps every eigenvalue of
  the iterated matrix at least ``smoothing``, so ``iterations`` (default 24) covers the
  ``log(1 / smoothing) / log(2.25)`` linear steps and the quadratic tail; where the float32 Gram
  matrix is too inexact for that (``|Z Y - I| > 1e-3`` after the last step) the batch falls back
  to ``'exact'`` (``lax.cond``). Smaller ``smoothing`` needs more iterations.
"""
import dataclasses
import functools
import math
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("laf", "tucker", "tt")
METHODS = ("exact", "gram", "randomized", "newton_schulz")
DEFAULT_RANK = 32
NS_ITERATIONS = 24
NS_SMOOTHING = 1e-6
# 'newton_schulz' falls back to 'exact' where |Z Y - I| exceeds this after the last step.
_NS_RESIDUAL = 1e-3
_RTOL_EPS = 1e3
# 'gram' is used where every kept singular value is above this times sqrt(eps) s_max.
_GRAM_RELIABLE = 10.0


def unfold(t: jax.Array, mode: int) -> jax.Array:
  """Mode-i flattening: ``moveaxis(t, mode, 0).reshape(t.shape[mode], -1)``."""
  mode = mode % t.ndim
  return jnp.moveaxis(t, mode, 0).reshape(t.shape[mode], -1)


def tt_unfolding(t: jax.Array, k: int) -> jax.Array:
  """Tensor-train unfolding: the first k axes against the rest, ``reshape(prod(shape[:k]), -1)``."""
  if not 1 <= k < t.ndim:
    raise ValueError(f"tt_unfolding: expected 1 <= k < {t.ndim}, got k={k}")
  return t.reshape(math.prod(t.shape[:k]), -1)


def laf_unfolding(t: jax.Array) -> jax.Array:
  """Last-axis flattening (the task-axis unfolding), (T, everything else)."""
  return unfold(t, t.ndim - 1)


def _mm(a, b):
  # Full float32 products: on GPUs the default lets XLA use TF32 (10-bit mantissa), which would
  # cost the factorisations (the Gram matrix above all) most of their accuracy.
  return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _thin_svd_tall(a):
  """Thin SVD of a batch of tall matrices (..., N, P), N >= P: QR first when N >> P."""
  n, p = a.shape[-2:]
  if n >= 2 * p:
    q, r = jnp.linalg.qr(a)
    ur, s, vt = jnp.linalg.svd(r, full_matrices=False)
    return _mm(q, ur), s, vt
  return jnp.linalg.svd(a, full_matrices=False)


def _thin_svd(m):
  """Thin SVD ``m = u diag(s) vt`` of (..., n, p) via the tall orientation."""
  if m.shape[-2] >= m.shape[-1]:
    return _thin_svd_tall(m)
  u, s, vt = _thin_svd_tall(jnp.swapaxes(m, -1, -2))
  return jnp.swapaxes(vt, -1, -2), s, jnp.swapaxes(u, -1, -2)


def _orthonormal(y):
  return jnp.linalg.qr(y)[0]


def _randomized_svd(m, key, rank, oversample, power_iters):
  """Top-``rank`` SVD of (..., n, p) by a randomized range finder with power iterations."""
  transposed = m.shape[-2] < m.shape[-1]
  a = jnp.swapaxes(m, -1, -2) if transposed else m  # tall: (..., N, P)
  width = rank + oversample
  omega = jax.random.normal(key, a.shape[:-2] + (a.shape[-1], width), a.dtype)
  q = _orthonormal(_mm(a, omega))
  at = jnp.swapaxes(a, -1, -2)
  for _ in range(power_iters):
    # Re-orthonormalising between products keeps the small singular directions from
    # drowning in round-off (Halko et al., Alg. 4.4).
    q = _orthonormal(_mm(a, _orthonormal(_mm(at, q))))
  b = _mm(jnp.swapaxes(q, -1, -2), a)  # (..., width, P)
  ub, s, vt = _thin_svd(b)
  u = _mm(q, ub)
  u, s, vt = u[..., :rank], s[..., :rank], vt[..., :rank, :]
  if transposed:
    return jnp.swapaxes(vt, -1, -2), s, jnp.swapaxes(u, -1, -2)
  return u, s, vt


def _gram_svd(m):
  """``(u, s, vt)`` of (..., n, p) from the eigenvectors of the smaller Gram matrix, re-projected.

  For n <= p: ``M M^T = U L U^T``, ``B = U^T M``, ``s = ||rows of B||``, ``vt = B / s`` (0 where
  ``s`` is masked as in the gradient); the transposed case works on ``M^T M`` and columns. When a
  kept singular value lies below ``_GRAM_RELIABLE * sqrt(eps) * s_max`` (where rounding in the
  squared matrix can mix the eigenvectors of nearby values), the whole batch is factorised by
  ``_thin_svd`` instead (``lax.cond``: the fast path costs nothing extra).
  """
  wide = m.shape[-2] <= m.shape[-1]
  a = m if wide else jnp.swapaxes(m, -1, -2)  # (..., n, p), n <= p
  gram = _mm(a, jnp.swapaxes(a, -1, -2))
  _, u = jnp.linalg.eigh(gram)
  u = u[..., ::-1]  # eigh is ascending; largest first
  b = _mm(jnp.swapaxes(u, -1, -2), a)
  s = jnp.linalg.norm(b, axis=-1)
  keep = _kept(s)
  vt = b * jnp.where(keep, 1.0 / jnp.where(keep, s, 1.0), 0.0)[..., None].astype(b.dtype)
  if not wide:
    u, vt = jnp.swapaxes(vt, -1, -2), jnp.swapaxes(u, -1, -2)
  return jax.lax.cond(_gram_unreliable(s), lambda: tuple(_thin_svd(m)), lambda: (u, s, vt))


def _gram_unreliable(s):
  """Whether any matrix of the batch has a kept singular value below ``10 sqrt(eps) s_max``."""
  reliable = _GRAM_RELIABLE * math.sqrt(float(jnp.finfo(s.dtype).eps))
  return jnp.any(_kept(s) & (s < reliable * jnp.max(s, axis=-1, keepdims=True)))


def _kept(s):
  """Singular values above ``1e3 eps s_max`` (a zero matrix keeps none)."""
  rtol = _RTOL_EPS * jnp.finfo(s.dtype).eps
  return s > rtol * jnp.max(s, axis=-1, keepdims=True)


def _factor_one(m, key, config):
  if config.method == "randomized" and min(m.shape[-2:]) > config.rank + config.oversample:
    return _randomized_svd(m, key, config.rank, config.oversample, config.power_iters)
  if config.method == "gram":
    return _gram_svd(m)
  return _thin_svd(m)


def _factor(m, key, config):
  if m.ndim == 2 or jax.default_backend() != "cpu":
    return _factor_one(m, key, config)
  # XLA:CPU runs independent LAPACK calls concurrently, and jaxlib's batched QR/SVD kernels wait
  # on the same small thread pool for their batch items: two of them at once can deadlock (seen
  # with jax 0.10 on 2 cores). One matrix at a time (lax.map) never waits on the pool.
  lead = m.shape[:-2]
  flat = m.reshape((-1,) + m.shape[-2:])
  keys = jax.random.split(key, flat.shape[0])
  u, s, vt = jax.lax.map(lambda args: _factor_one(args[0], args[1], config), (flat, keys))
  return (u.reshape(lead + u.shape[1:]), s.reshape(lead + s.shape[1:]),
          vt.reshape(lead + vt.shape[1:]))


def _newton_schulz(a, iterations, smoothing):
  """``(z, gram, scale, converged)`` for a batch of wide matrices (..., n, p), n <= p.

  ``z ~ scale^(1/2) (gram + smoothing scale I)^(-1/2)`` by the coupled Newton-Schulz iteration
  (module docstring); ``converged``: every matrix of the batch has ``|z y - I| <= 1e-3``.
  """
  n = a.shape[-2]
  eye = jnp.eye(n, dtype=a.dtype)
  gram = _mm(a, jnp.swapaxes(a, -1, -2))
  scale = jnp.sqrt(jnp.linalg.norm(_mm(gram, gram), axis=(-2, -1)))[..., None, None]
  scale = jnp.where(scale > 0, scale, 1.0)  # a zero matrix: z = I / sqrt(smoothing), value 0
  y0 = gram / scale + smoothing * eye
  z0 = jnp.broadcast_to(eye, y0.shape)

  def step(_, yz):
    y, z = yz
    t = 1.5 * eye - 0.5 * _mm(z, y)
    return _mm(y, t), _mm(t, z)

  y, z = jax.lax.fori_loop(0, iterations, step, (y0, z0))
  residual = jnp.abs(_mm(z, y) - eye).max()
  converged = jnp.isfinite(residual) & (residual <= _NS_RESIDUAL)
  return z, gram, scale, converged


def _ns_value_and_grad(m, key, config, with_grad):
  """Newton-Schulz value (and gradient) of (..., n, p), or the exact ones where it fails."""
  iterations, smoothing = config.iterations, config.smoothing
  wide = m.shape[-2] <= m.shape[-1]
  a = m if wide else jnp.swapaxes(m, -1, -2)
  z, gram, scale, converged = _newton_schulz(a, iterations, smoothing)

  def fast():
    # tr(Z G) / sqrt(scale) = sum_i s_i^2 / sqrt(s_i^2 + eps); Z and G are symmetric.
    value = jnp.sum(z * gram, axis=(-2, -1)) / jnp.sqrt(scale[..., 0, 0])
    if not with_grad:
      return value, jnp.zeros((), m.dtype)
    grad = _mm(z, a) / jnp.sqrt(scale)
    return value, (grad if wide else jnp.swapaxes(grad, -1, -2))

  def exact():
    u, s, vt = _factor(m, key, _svd_config("exact", None, 0, 0))
    if not with_grad:
      return s.sum(-1), jnp.zeros((), m.dtype)
    return s.sum(-1), _uv(u, s, vt)

  return jax.lax.cond(converged, fast, exact)


def _uv(u, s, vt):
  keep = _kept(s).astype(u.dtype)
  return _mm(u * keep[..., None, :], vt)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _nuclear(m, key, config):
  if config.method == "newton_schulz":
    return _ns_value_and_grad(m, key, config, with_grad=False)[0]
  return _factor(m, key, config)[1].sum(-1)


def _nuclear_fwd(m, key, config):
  if config.method == "newton_schulz":
    return _ns_value_and_grad(m, key, config, with_grad=True)
  u, s, vt = _factor(m, key, config)
  return s.sum(-1), _uv(u, s, vt)


def _nuclear_bwd(config, grad, g):
  del config
  return grad * g[..., None, None].astype(grad.dtype), None


_nuclear.defvjp(_nuclear_fwd, _nuclear_bwd)


@dataclasses.dataclass(frozen=True)
class SVDConfig:
  """The hashable (static) description of a factorisation, fields unused by `method` zero.

  Attributes:
    method: one of `METHODS`.
    rank, oversample, power_iters: the randomized range finder's.
    iterations, smoothing: Newton-Schulz's steps and relative shift eps.
  """
  method: str
  rank: int = 0
  oversample: int = 0
  power_iters: int = 0
  iterations: int = 0
  smoothing: float = 0.0


def _svd_config(method, rank, oversample, power_iters, iterations=NS_ITERATIONS,
                smoothing=NS_SMOOTHING) -> SVDConfig:
  """The checked `SVDConfig` of a factorisation's arguments."""
  if method not in METHODS:
    raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
  if method == "randomized":
    rank = DEFAULT_RANK if rank is None else int(rank)
    if rank < 1 or oversample < 0 or power_iters < 0:
      raise ValueError(f"randomized SVD: expected rank >= 1, oversample >= 0, power_iters >= 0, "
                       f"got rank={rank}, oversample={oversample}, power_iters={power_iters}")
    return SVDConfig("randomized", rank, int(oversample), int(power_iters))
  if method == "newton_schulz":
    if int(iterations) < 1 or not 0.0 < float(smoothing) < 1.0:
      raise ValueError(f"newton_schulz: expected iterations >= 1 and 0 < smoothing < 1, got "
                       f"iterations={iterations}, smoothing={smoothing}")
    return SVDConfig("newton_schulz", iterations=int(iterations), smoothing=float(smoothing))
  return SVDConfig(method)


def nuclear_norm(m: jax.Array, *, method: str = "exact", rank: int | None = None,
                 oversample: int = 10, power_iters: int = 2,
                 key: jax.Array | None = None, iterations: int = NS_ITERATIONS,
                 smoothing: float = NS_SMOOTHING) -> jax.Array:
  """Nuclear norm ``sum_i s_i(m)`` with the gradient ``U V^T`` (custom VJP).

  Args:
    m: a matrix (n, p), or a batch of them (..., n, p).
    method: 'exact' (QR + small SVD), 'gram' (eigh of the small Gram matrix, re-projected),
      'randomized' (range finder + small SVD; the top-``rank`` singular values only) or
      'newton_schulz' (matrix products only; singular values below ~``sqrt(smoothing)`` of
      the largest masked softly).
    rank: 'randomized' only: number of leading singular values summed (default 32).
    oversample: 'randomized' only: extra random directions of the range finder.
    power_iters: 'randomized' only: power iterations (sharpen a slowly decaying spectrum).
    key: 'randomized' only: PRNG key of the test matrix (default: a fixed key; pass
      ``fold_in(rng, step)`` in training so every step draws fresh directions).
    iterations: 'newton_schulz' only: Newton-Schulz steps (24 suit the default smoothing).
    smoothing: 'newton_schulz' only: the shift ``eps`` relative to ``s_max^2`` (module
      docstring).

  Returns:
    The nuclear norm, shape ``m.shape[:-2]``.
  """
  if m.ndim < 2:
    raise ValueError(f"nuclear_norm: expected a matrix (..., n, p), got shape {m.shape}")
  config = _svd_config(method, rank, oversample, power_iters, iterations, smoothing)
  if key is None:
    key = jax.random.key(0)
  return _nuclear(m, key, config)


def _check_gammas(kind: str, ndim: int, gammas):
  count = {"laf": 1, "tucker": ndim, "tt": ndim - 1}[kind]
  if gammas is None:
    return (1.0,) * count
  gammas = tuple(np.atleast_1d(np.asarray(gammas, np.float64)).tolist())
  if len(gammas) != count:
    raise ValueError(f"gammas: the {kind!r} norm of an order-{ndim} tensor needs {count} weights, "
                     f"got {len(gammas)}")
  return gammas


def _unfoldings(t, kind, batch_dims=0):
  """The unfoldings a kind sums over, for tensors with ``batch_dims`` leading batch axes."""
  lead, shape = t.shape[:batch_dims], t.shape[batch_dims:]
  order = len(shape)
  if kind == "laf":
    modes = [order - 1]
  elif kind == "tucker":
    modes = list(range(order))
  else:
    return [t.reshape(lead + (math.prod(shape[:k]), -1)) for k in range(1, order)]
  return [jnp.moveaxis(t, batch_dims + i, batch_dims).reshape(lead + (shape[i], -1))
          for i in modes]


def _check_kind(kind):
  if kind not in KINDS:
    raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")


def _weighted_norm(t, kind, gammas, batch_dims, *, key, **svd_kwargs):
  gammas = _check_gammas(kind, t.ndim - batch_dims, gammas)
  if t.ndim - batch_dims < 2:
    raise ValueError(f"tensor trace norm: expected a tensor of order >= 2, got shape {t.shape}")
  keys = jax.random.split(jax.random.key(0) if key is None else key, len(gammas))
  total = 0.0
  for gamma, mat, k in zip(gammas, _unfoldings(t, kind, batch_dims), keys):
    if gamma:
      total = total + gamma * nuclear_norm(mat, key=k, **svd_kwargs)
  return total


def tensor_trace_norm(t: jax.Array, kind: str, gammas: Sequence[float] | None = None, *,
                      method: str = "exact", rank: int | None = None, oversample: int = 10,
                      power_iters: int = 2, key: jax.Array | None = None,
                      iterations: int = NS_ITERATIONS,
                      smoothing: float = NS_SMOOTHING) -> jax.Array:
  """LAF, Tucker or TT trace norm of one stacked tensor (see the module docstring).

  Args:
    t: the stacked tensor, task axis last (kh, kw, cin, cout, T).
    kind: 'laf', 'tucker' or 'tt'.
    gammas: weights of the unfoldings' nuclear norms (1 for LAF, ndim for Tucker, ndim - 1 for
      TT); default all 1.
    method, rank, oversample, power_iters, key, iterations, smoothing: as in ``nuclear_norm``.

  Returns:
    Scalar norm.
  """
  _check_kind(kind)
  return _weighted_norm(t, kind, gammas, 0, method=method, rank=rank, oversample=oversample,
                        power_iters=power_iters, key=key, iterations=iterations,
                        smoothing=smoothing)


def trace_norm_per_layer(kernels: Mapping[str, jax.Array], kind: str,
                         gammas: Sequence[float] | None = None,
                         **svd_kwargs) -> dict[str, jax.Array]:
  """The tensor trace norm of every layer, e.g. for the decrease rate (optimised / initial norm).

  Args:
    kernels: ``{name: stacked kernel}`` (``MultiTaskNet.shareable_kernels``).
    kind: 'laf', 'tucker' or 'tt'.
    gammas: unfolding weights as in ``tensor_trace_norm``.
    **svd_kwargs: method, rank, oversample, power_iters, key, iterations, smoothing of
      ``nuclear_norm``.

  Returns:
    ``{name: scalar norm}`` (float32, whatever the kernels' dtype).
  """
  return {name: tensor_trace_norm(_float32(t), kind, gammas, **svd_kwargs)
          for name, t in kernels.items()}


def _float32(t):
  # The factorisations run in float32 even where a network computes in bfloat16 (an 8-bit
  # mantissa would lose the small singular values that the norm sums).
  return jnp.asarray(t).astype(jnp.promote_types(jnp.asarray(t).dtype, jnp.float32))


def trace_norm_penalty(kernels: Mapping[str, jax.Array], *, kind: str, strength,
                       gammas: Sequence[float] | None = None, method: str = "exact",
                       key: jax.Array | None = None, rank: int | None = None,
                       oversample: int = 10, power_iters: int = 2,
                       iterations: int = NS_ITERATIONS, smoothing: float = NS_SMOOTHING,
                       batch_layers: bool | None = None) -> jax.Array:
  """``strength * sum over layers`` of the tensor trace norm of each stacked kernel.

  On accelerators, layers of the same shape are stacked and factorised as one batch (ResNet-34 has
  36 kernels but only 11 distinct shapes), which keeps the number of SVD calls small; on CPU every
  layer is factorised on its own (see ``_factor`` for why).

  Args:
    kernels: ``{name: stacked kernel (kh, kw, cin, cout, T)}``.
    kind: 'laf', 'tucker' or 'tt'.
    strength: the network-wide penalty weight (pass an array under jit to avoid recompiles).
    gammas: unfolding weights as in ``tensor_trace_norm``.
    method: 'exact', 'gram', 'randomized' or 'newton_schulz' (see ``nuclear_norm``).
    key: PRNG key of the randomized SVD (fold in the step for fresh directions every step).
    rank, oversample, power_iters, iterations, smoothing: as in ``nuclear_norm``.
    batch_layers: factorise same-shape layers as one batch; default: on accelerators only.

  Returns:
    Scalar penalty (float32; the kernels are factorised in at least float32).
  """
  _check_kind(kind)
  kernels = {name: _float32(t) for name, t in kernels.items()}
  if not kernels:
    return jnp.zeros((), jnp.float32) * strength
  groups: dict[tuple[int, ...], list[jax.Array]] = {}
  batch = jax.default_backend() != "cpu" if batch_layers is None else batch_layers
  for name in sorted(kernels):
    # On CPU each layer is factorised on its own: batched LAPACK calls there go through a
    # sequential lax.map (see _factor), which compiles and runs slower than separate calls.
    group_key = tuple(kernels[name].shape) if batch else (len(groups),)
    groups.setdefault(group_key, []).append(kernels[name])
  base = jax.random.key(0) if key is None else key
  total = 0.0
  for i, (shape, group) in enumerate(sorted(groups.items())):
    norms = _weighted_norm(jnp.stack(group), kind, gammas, 1, method=method, rank=rank,
                           oversample=oversample, power_iters=power_iters,
                           iterations=iterations, smoothing=smoothing,
                           key=jax.random.fold_in(base, i))
    total = total + jnp.sum(norms)
  return strength * total
