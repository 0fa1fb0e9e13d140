"""The vmapped, sharded (kappa, xi) sweep: equal to single fits; the paper's grid; reproducing the
TGSR authors' own grid search on the real benchmark features."""
import jax
import jax.extend
import numpy as np
import pytest
import scipy.io

from tgsr_jax import cdmer_io
from tgsr_jax import layout
from tgsr_jax import solver
from tgsr_jax import sweep
from tgsr_jax.reference import scores_reference
from tgsr_jax.synthetic import features as synthetic_features


def _problem(seed=0):
  rng = np.random.default_rng(seed)
  xs = rng.random((30, 60))
  ys = np.arange(30) % 3
  xs[:, 10:20] += 0.6 * ys[:, None]
  yt = rng.integers(0, 3, 25)
  xt = rng.random((25, 60)) + 0.2
  xt[:, 10:20] += 0.6 * yt[:, None]
  return xs, ys, xt, yt, layout.contiguous_groups(60, 6)


@pytest.mark.parametrize("precision,engine", [("float64", "gram"), ("float64", "dense"),
                                              ("float32", "gram")])
def test_sweep_equals_separate_fits(precision, engine):
  assert len(jax.devices()) == 2  # conftest forces 2 host devices: grid points are sharded
  xs, ys, xt, yt, groups = _problem()
  kappas, xis = (1, 2, 4, 6), (0.0, 0.3, 7.0)
  # chunk_size 5 is not a multiple of the device count: exercises the padding.
  result = sweep.sweep(xs, ys, xt, yt, groups=groups, kappas=kappas, xis=xis,
                       precision=precision, chunk_size=5, engine=engine)
  assert len(result) == 12
  for i, (k, x) in enumerate(zip(result.kappa, result.xi)):
    single = solver.fit(xs, ys, xt, groups=groups, kappa=int(k), xi=float(x), num_classes=3,
                        precision=precision)
    acc, mf1 = scores_reference(yt, np.asarray(solver.predict(single.coef, xt)), 3)
    assert result.iterations[i] == single.iterations
    assert result.converged[i] == single.converged
    assert result.acc[i] == pytest.approx(acc, abs=1e-12)
    assert result.mf1[i] == pytest.approx(mf1, abs=1e-12)
    np.testing.assert_array_equal(result.selected[i], single.selected)
  assert np.array_equal(result.kappa, np.repeat(kappas, 3))


def test_gram_engine_on_unequal_groups_is_refused_and_dense_handles_them():
  xs, ys, xt, yt, _ = _problem(seed=2)
  groups = np.repeat(np.arange(4), [10, 20, 5, 25])
  with pytest.raises(ValueError, match="equal size"):
    sweep.prepare_sweep(xs, ys, xt, yt, groups=groups, engine="gram")
  result = sweep.sweep(xs, ys, xt, yt, groups=groups, kappas=(2,), xis=(1.0,), precision="float64")
  single = solver.fit(xs, ys, xt, groups=groups, kappa=2, xi=1.0, num_classes=3)
  assert result.iterations[0] == single.iterations
  np.testing.assert_array_equal(result.selected[0], single.selected)


def test_paper_xi_grid():
  distinct = sweep.paper_xi_grid()
  assert distinct.size == 271
  assert sweep.paper_xi_grid(distinct=False).size == 276
  assert distinct[0] == 0.001 and distinct[-1] == 1000.0
  assert 44.0 in distinct and 280.0 in distinct and 0.003 in distinct


def test_synthetic_small_kappa_keeps_planted_groups():
  planted = set(int(r) for regions in synthetic_features.PLANTED_REGIONS.values() for r in regions)
  spec = synthetic_features.DEFAULT_DOMAINS
  xs, ys = synthetic_features.make_database(spec["SMIC_VIS"], seed=3)
  xt, yt = synthetic_features.make_database(spec["SMIC_HS"], seed=3)
  result = sweep.sweep(xs, ys - 1, xt, yt - 1, groups=layout.benchmark_region_groups(),
                       kappas=(3, 9), xis=(0.0, 1.0), precision="float32")
  for selected in result.selected:
    chosen = set(np.flatnonzero(selected).tolist())
    assert chosen <= planted, chosen - planted
  # Planted regions carry the expression: small kappa beats chance clearly.
  assert result.mf1.max() > 0.6


# --- the authors' own grid search on the real ssfr features (../shared/cdmer) -------------------

PAPER_ENTRIES = {("SMIC_VIS", "SMIC_NIR"): (12, 44.0, 0.7042, 0.6984),
                 ("SMIC_NIR", "SMIC_VIS"): (12, 280.0, 0.8451, 0.8403),
                 ("CASME2", "SMIC_VIS"): (85, 0.003, 0.5915, 0.5906)}
REAL_EXPERIMENTS = [("SMIC_VIS", "SMIC_NIR"), ("SMIC_NIR", "SMIC_VIS"), ("CASME2", "SMIC_VIS"),
                    ("SMIC_VIS", "CASME2"), ("CASME2", "SMIC_NIR"), ("SMIC_NIR", "CASME2")]


def _ssfr(shared, db):
  return cdmer_io.read_feature_file(shared("cdmer", "ssfr", f"CrossCorpus_LBPTOP_R3P8_{db}_112by112.mat"))


@pytest.mark.parametrize("src,tgt", REAL_EXPERIMENTS)
def test_sweep_reproduces_authors_grid(shared, src, tgt):
  record = scipy.io.loadmat(shared("cdmer", "ssfr", f"Acc_record_3class_{src}_{tgt}_feature_LBPTOP_R3P8.mat"))
  acc_table = record["Acc"]
  best = record["Acc_max_meanF1"].ravel()
  # The authors' best row is the first row with the highest M-F1 of their own grid.
  assert np.array_equal(acc_table[np.argmax(acc_table[:, 3])], best)
  source, target = _ssfr(shared, src), _ssfr(shared, tgt)
  # A 10 x 10 sub-grid (100 rows) drawn at random, always holding the authors' best row.
  rng = np.random.default_rng(hash((src, tgt)) % 2**32)
  all_xis = np.unique(np.round(acc_table[:, 1], 10))
  other_kappas = np.setdiff1d(np.arange(1, 86), [int(best[0])])
  other_xis = all_xis[~np.isclose(all_xis, best[1])]
  kappas = np.sort(np.concatenate([[int(best[0])], rng.choice(other_kappas, 9, replace=False)]))
  xis = np.sort(np.concatenate([[best[1]], rng.choice(other_xis, 9, replace=False)]))
  result = sweep.sweep(source.features, source.labels - 1, target.features, target.labels - 1,
                       groups=layout.contiguous_groups(15045, 85), kappas=kappas, xis=xis,
                       precision="float64", chunk_size=50)
  lookup = {(int(k), round(float(x), 8)): (a, m) for k, x, a, m in acc_table}
  same = [abs(lookup[(int(k), round(float(x), 8))][0] - a) < 1e-9 and
          abs(lookup[(int(k), round(float(x), 8))][1] - m) < 1e-9
          for k, x, a, m in zip(result.kappa, result.xi, result.acc, result.mf1)]
  assert len(same) == 100
  assert np.mean(same) >= 0.99, f"{np.sum(~np.asarray(same))} of {len(same)} rows differ"
  assert result.converged.all()
  i = int(np.flatnonzero((result.kappa == best[0]) & np.isclose(result.xi, best[1]))[0])
  assert result.acc[i] == pytest.approx(best[2], abs=1e-9)
  assert result.mf1[i] == pytest.approx(best[3], abs=1e-9)
  if (src, tgt) in PAPER_ENTRIES:
    k, x, acc, mf1 = PAPER_ENTRIES[(src, tgt)]
    assert (int(best[0]), float(best[1])) == (k, x)
    assert round(result.acc[i], 4) == acc and round(result.mf1[i], 4) == mf1


def test_benchmark_corpus_features_give_documented_values(shared):
  """The SMIC_*_Corpus files (v5, samples x features): V->N (12, 44) = 0.7324 / 0.7305, 143 it."""
  vis = cdmer_io.read_feature_file(shared("cdmer", "SMIC_VIS_Corpus_LBPTOP.mat"))
  nir = cdmer_io.read_feature_file(shared("cdmer", "SMIC_NIR_Corpus_LBPTOP.mat"))
  fit = solver.fit(vis.features, vis.labels - 1, nir.features, groups=layout.contiguous_groups(15045, 85),
                   kappa=12, xi=44.0, num_classes=3)
  acc, mf1 = scores_reference(nir.labels - 1, np.asarray(solver.predict(fit.coef, nir.features)), 3)
  assert fit.iterations == 143
  assert round(acc, 4) == 0.7324 and round(mf1, 4) == 0.7305


def test_xi_spectra_factor_one_matrix_at_a_time_on_cpu():
  # jaxlib's batched CPU eigh waits on XLA's intra-op pool for its batch items; two devices of a
  # sharded sweep inside it at once deadlocked a 2-core run. On the CPU each call takes one matrix.
  xs, ys, xt, _, groups = _problem()
  with jax.enable_x64(True):
    problem = solver.prepare_problem(xs, ys, xt, groups, num_classes=3)
    xi = np.array([0.0, 0.5, 2.0, 30.0])
    for platform, batches in (("cpu", [()]), ("gpu", [(4,)])):
      jaxpr = jax.make_jaxpr(lambda x: solver.xi_spectra(problem, x, platform=platform))(xi)
      shapes = [v.aval.shape for e in _equations(jaxpr.jaxpr) if e.primitive.name == "eigh"
                for v in e.invars]
      assert [shape[:-2] for shape in shapes] == batches, (platform, shapes)
    w, s = solver.xi_spectra(problem, xi, platform="cpu")
    for i, x in enumerate(xi):
      w1, s1 = solver.xi_spectrum(problem, x)
      np.testing.assert_allclose(s[i], s1, rtol=1e-12, atol=1e-12)
      np.testing.assert_allclose(np.abs(w[i].T @ w1), np.eye(len(s1)), atol=1e-8)  # same basis


def _equations(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from _equations(sub)
