"""Device augmentation against the NumPy / OpenCV path and SciPy; the host gatherer and prefetcher."""
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from mtl_flax import evaluate
from mtl_flax import metrics
from mtl_flax.data import augment
from mtl_flax.data import device_augment as da
from mtl_flax.data import device_pipeline
from mtl_flax.data import pipeline
from subtle_core.faces import ibug

S = 32


def _image(seed=0, size=S):
  rng = np.random.default_rng(seed)
  noise = rng.integers(0, 256, (size, size, 3)).astype(np.uint8)
  return cv2.GaussianBlur(noise, (5, 5), 1.2)


def _landmarks(seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(0.15, 0.85, (68, 2)).astype(np.float32)


def _scipy_warp(image, matrix, size):
  """Independent reference: bilinear sampling at M^-1 p with edge replication (float64)."""
  inv = np.linalg.inv(np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]]))
  ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
  sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
  sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
  return np.stack([ndimage.map_coordinates(image[..., c].astype(np.float64), [sy, sx], order=1,
                                           mode="nearest") for c in range(image.shape[-1])], -1)


@pytest.mark.parametrize("rotation,scale,shift", [(12.0, 1.07, (0.03, -0.04)),
                                                  (-15.0, 0.9, (-0.05, 0.05)),
                                                  (0.0, 1.0, (0.0, 0.0))])
def test_matrices_and_warp_match_opencv_and_scipy(rotation, scale, shift):
  matrix = augment.affine_matrix(S, rotation_deg=rotation, scale=scale, shift=shift)
  ours = da.affine_matrix(S, rotation, scale, jnp.asarray(shift))
  np.testing.assert_allclose(np.asarray(ours), matrix, atol=1e-5)
  image = _image()
  warped = np.asarray(da.warp_bilinear(jnp.asarray(image), ours, S))
  # Float64 bilinear sampling: equal up to float32 rounding.
  np.testing.assert_allclose(warped, _scipy_warp(image, matrix, S), atol=2e-3)
  # cv2.warpAffine rounds coordinates to 1/32 pixel: a grey level at most on a smooth image.
  diff = np.abs(np.round(warped) - augment.warp(image, matrix, S).astype(np.float32))
  assert diff.max() <= 2 and diff.mean() < 0.2
  points = _landmarks()
  _, want = augment.affine_landmarks(image, points, matrix)
  _, moved = da.warp_landmark_sample(jnp.asarray(image), points, ours, False)
  np.testing.assert_allclose(np.asarray(moved), want, atol=1e-5)


def test_crop_matrix_matches_augment():
  box = (3.5, 1.25, 27.0, 27.0)
  np.testing.assert_allclose(np.asarray(da.crop_matrix(S, box[0], box[1], box[2])),
                             augment.crop_matrix(S, box), atol=1e-5)
  image = _image(3)
  warped = np.asarray(da.warp_bilinear(jnp.asarray(image), da.crop_matrix(S, *box[:3]), S))
  np.testing.assert_allclose(warped, _scipy_warp(image, augment.crop_matrix(S, box), S),
                             atol=2e-3)


def test_flip_is_exact_mirrors_points_and_twice_is_identity():
  image, points = _image(1), _landmarks(1)
  flip = da.flip_matrix(S, True)
  pixels, moved = da.warp_landmark_sample(jnp.asarray(image), points, flip, True)
  want_image, want_points = augment.horizontal_flip(image, points)
  np.testing.assert_array_equal(np.asarray(pixels), want_image.astype(np.float32))
  np.testing.assert_allclose(np.asarray(moved), want_points, atol=1e-6)
  back, back_points = da.warp_landmark_sample(pixels, moved, flip, True)
  np.testing.assert_array_equal(np.asarray(back), image.astype(np.float32))
  np.testing.assert_allclose(np.asarray(back_points), points, atol=1e-6)
  # The subject's right eye (36-41) of the flipped face is the mirror of the original left eye.
  assert set(ibug.MIRROR_INDEX[36:42]) == set(range(42, 48))
  moved = np.asarray(moved)
  np.testing.assert_allclose(moved[36:42].mean(0), [1 - points[42:48, 0].mean(),
                                                    points[42:48, 1].mean()], atol=1e-6)
  np.testing.assert_allclose(float(metrics.inter_pupil_distance(moved)),
                             float(metrics.inter_pupil_distance(points)), rtol=1e-5)


def test_random_sample_equals_host_path_with_the_drawn_parameters():
  """One resampling of flip + affine = the host's flip, then `augment.affine_landmarks`."""
  params = augment.LandmarkAugment(flip_probability=0.5, noise_std=0.0)
  image, points = _image(2), _landmarks(2)
  flips = []
  for j in range(6):
    key = jax.random.fold_in(jax.random.key(7), j)
    pixels, moved = da.augment_landmark_sample(jnp.asarray(image), points, key, params=params)
    _, flip, drawn = da.landmark_transform(
        jax.random.split(key)[0], S, flip_probability=0.5, max_rotation_deg=15.0,
        scale_range=(0.9, 1.1), max_shift=0.05)
    flips.append(bool(flip))
    host_image, host_points = (augment.horizontal_flip(image, points) if flip else (image, points))
    matrix = augment.affine_matrix(S, rotation_deg=float(drawn["rotation_deg"]),
                                   scale=float(drawn["scale"]),
                                   shift=np.asarray(drawn["shift"], np.float64))
    want_image, want_points = augment.affine_landmarks(host_image, host_points, matrix)
    diff = np.abs(np.asarray(pixels) - want_image.astype(np.float32))
    assert diff.max() <= 2 and diff.mean() < 0.2
    np.testing.assert_allclose(np.asarray(moved), want_points, atol=1e-5)
  assert any(flips) and not all(flips)


def test_parameters_stay_in_their_ranges():
  keys = jax.random.split(jax.random.key(0), 2000)
  draw = jax.jit(jax.vmap(lambda k: da.landmark_transform(
      k, S, flip_probability=0.3, max_rotation_deg=10.0, scale_range=(0.8, 1.2), max_shift=0.05,
      crop_min_fraction=0.85)[2]))
  p = jax.tree.map(np.asarray, draw(keys))
  assert 0.25 < p["flip"].mean() < 0.35
  assert np.abs(p["rotation_deg"]).max() <= 10.0 and np.abs(p["rotation_deg"]).max() > 9.0
  assert p["scale"].min() >= 0.8 and p["scale"].max() <= 1.2
  assert np.abs(p["shift"]).max() <= 0.05
  assert p["crop_side"].min() >= 0.85 * S and p["crop_side"].max() <= S
  assert (p["crop_corner"] >= 0).all() and (p["crop_corner"] <= S - p["crop_side"][:, None]).all()


def _batch(b=4, seed=0):
  images = np.stack([_image(seed + i) for i in range(b)])
  expr = np.stack([_image(seed + 10 + i) for i in range(b)])
  points = np.stack([_landmarks(seed + i) for i in range(b)]).reshape(b, 136)
  return {"images": np.stack([expr, images]), "labels": np.arange(b, dtype=np.int32),
          "landmarks": points}


# One compiled function for the batch tests (compiling is most of their time on a CPU).
_AUGMENT = jax.jit(lambda batch, seed, step: da.augment_batch(
    batch, da.data_key(seed), step, tasks=("expression", "landmarks")))


def test_augment_batch_is_deterministic_per_step_and_sample():
  batch = _batch()
  a, b, c = _AUGMENT(batch, 0, 5), _AUGMENT(batch, 0, 5), _AUGMENT(batch, 0, 6)
  np.testing.assert_array_equal(np.asarray(a["images"]), np.asarray(b["images"]))
  np.testing.assert_array_equal(np.asarray(a["landmarks"]), np.asarray(b["landmarks"]))
  assert not np.array_equal(np.asarray(a["images"][1]), np.asarray(c["images"][1]))
  assert not np.allclose(np.asarray(a["landmarks"]), np.asarray(c["landmarks"]))
  np.testing.assert_array_equal(np.asarray(a["labels"]), batch["labels"])
  # Sample j's output depends on (step, j) only, not on the rest of the batch.
  keys = da.sample_keys(da.data_key(0), 5, 4, stream=pipeline.TASKS.index("landmarks"))
  one = da.augment_landmark_sample(jnp.asarray(batch["images"][1, 2]),
                                   batch["landmarks"][2].reshape(68, 2), keys[2],
                                   params=augment.LandmarkAugment())
  np.testing.assert_allclose(np.asarray(a["images"][1, 2]), np.asarray(da.to_network_input(
      one[0])), atol=1e-6)
  assert not np.array_equal(jax.random.key_data(keys[2]), jax.random.key_data(keys[3]))


def test_expression_images_are_only_flipped_and_scaled_like_the_step():
  batch = _batch()
  flipped = 0
  for seed in range(3):
    out = _AUGMENT(batch, seed, 0)
    for j in range(4):
      got = np.asarray(out["images"][0, j])
      plain = np.asarray(evaluate.preprocess(batch["images"][0, j]))
      mirrored = np.asarray(evaluate.preprocess(batch["images"][0, j, :, ::-1]))
      is_plain, is_mirrored = (np.allclose(got, plain, atol=1e-6),
                               np.allclose(got, mirrored, atol=1e-6))
      assert is_plain != is_mirrored
      flipped += is_mirrored
  assert 0 < flipped < 12
  # Landmark images: integer grey levels (as the host's uint8), in the step's input scaling.
  levels = (np.asarray(out["images"][1]) + 1.0) * 127.5
  np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
  assert levels.min() >= 0 and levels.max() <= 255
  off = da.augment_batch(batch, da.data_key(3), 0, tasks=("expression", "landmarks"),
                         enabled=False)
  np.testing.assert_allclose(np.asarray(off["images"]),
                             np.asarray(evaluate.preprocess(jnp.asarray(batch["images"]))),
                             atol=1e-6)


def test_noise_has_the_configured_spread():
  flat = np.full((1, S, S, 3), 128, np.uint8)
  points = np.tile(_landmarks()[None], (1, 1, 1))
  params = augment.LandmarkAugment(flip_probability=0.0, max_rotation_deg=0.0,
                                   scale_range=(1.0, 1.0), max_shift=0.0, noise_std=3.0)
  pixels, moved = da.augment_landmarks(flat, points, jax.random.split(jax.random.key(0), 1),
                                       params=params)
  np.testing.assert_allclose(np.asarray(moved), points, atol=1e-5)
  residual = np.asarray(pixels) - 128.0
  assert abs(residual.std() - 3.0) < 0.2 and abs(residual.mean()) < 0.2


def _datasets(n_expr=7, n_lm=5, size=8):
  rng = np.random.default_rng(0)
  expr = pipeline.TaskData(rng.integers(0, 256, (n_expr, size, size, 3)).astype(np.uint8),
                           rng.integers(0, 6, n_expr).astype(np.int32))
  lm = pipeline.TaskData(rng.integers(0, 256, (n_lm, size, size, 3)).astype(np.uint8),
                         rng.uniform(0, 1, (n_lm, 68, 2)).astype(np.float32))
  return {"expression": expr, "landmarks": lm}


def test_host_batches_equal_the_unaugmented_pipeline_batches():
  datasets = _datasets()
  tasks = ("expression", "landmarks")
  host = device_pipeline.HostBatches(datasets, tasks, 3, seed=11)
  for step in range(9):  # several epochs, batches straddling epoch ends
    want = pipeline.train_batch(step, datasets, tasks, 3, seed=11, augmentation=False)
    got = host(step)
    assert sorted(got) == sorted(want)
    for key in want:
      assert got[key].dtype == want[key].dtype
      np.testing.assert_array_equal(got[key], want[key])
    np.testing.assert_array_equal(host.indices("landmarks", step), pipeline.epoch_batch_indices(
        5, 3, step, seed=11, stream=pipeline.TASKS.index("landmarks")))
  # A batch larger than the dataset spans several epochs.
  big = device_pipeline.HostBatches(datasets, ("landmarks",), 12, seed=2)
  np.testing.assert_array_equal(big.indices("landmarks", 1),
                                pipeline.epoch_batch_indices(5, 12, 1, seed=2, stream=1))


def test_prefetch_to_device_yields_every_batch_in_order_on_the_device():
  datasets = _datasets()
  host = device_pipeline.HostBatches(datasets, ("expression", "landmarks"), 2, seed=0)
  device = jax.devices()[0]
  sharding = jax.sharding.SingleDeviceSharding(device)
  items = list(device_pipeline.prefetch_to_device(
      (host(s) for s in range(5)), size=2, sharding=sharding))
  assert len(items) == 5
  for step, item in enumerate(items):
    assert isinstance(item["images"], jax.Array) and item["images"].sharding == sharding
    np.testing.assert_array_equal(np.asarray(item["images"]), host(step)["images"])
  with pytest.raises(ValueError, match="size must be >= 1"):
    next(device_pipeline.prefetch_to_device(iter([1]), size=0))


def test_sharded_batch_gives_the_same_augmentation():
  devices = jax.devices()
  if len(devices) < 2:
    pytest.skip("needs 2 devices (conftest forces 2 host devices)")
  mesh = jax.sharding.Mesh(np.asarray(devices[:2]), ("data",))
  spec = jax.sharding.PartitionSpec
  batch = _batch()
  shardings = {"images": jax.sharding.NamedSharding(mesh, spec(None, "data")),
               "labels": jax.sharding.NamedSharding(mesh, spec("data")),
               "landmarks": jax.sharding.NamedSharding(mesh, spec("data"))}
  sharded = jax.device_put(batch, shardings)
  fn = jax.jit(lambda b: da.augment_batch(b, da.data_key(1), 4,
                                          tasks=("expression", "landmarks")),
               in_shardings=(shardings,))
  got = fn(sharded)
  want = _AUGMENT(batch, 1, 4)
  assert got["images"].sharding.spec == spec(None, "data")
  np.testing.assert_allclose(np.asarray(got["images"]), np.asarray(want["images"]), atol=1e-6)
  np.testing.assert_allclose(np.asarray(got["landmarks"]), np.asarray(want["landmarks"]),
                             atol=1e-6)
