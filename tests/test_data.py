import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fjdl import data


def _numbered(m, n_features=3):
    """X whose first column is each example's index, and Y equal to that index: rows traceable."""
    X = np.zeros((m, n_features), np.float32)
    X[:, 0] = np.arange(m)
    X[:, 1:] = np.arange(m)[:, None] * 10.0 + np.arange(1, n_features)
    return jnp.asarray(X), jnp.arange(m, dtype=jnp.int32)


# --------------------------------------------------------------------------------------------------
# minibatches


@pytest.mark.parametrize(
    "m, batch_size, sizes",
    [(148, 64, [64, 64, 20]), (128, 64, [64, 64]), (5, 1, [1] * 5), (10, 10, [10]), (7, 100, [7])],
)
def test_minibatch_sizes(m, batch_size, sizes):
    X, Y = _numbered(m)
    batches = data.minibatches(jax.random.key(0), X, Y, batch_size)
    assert [xb.shape for xb, _ in batches] == [(s, 3) for s in sizes]
    assert [yb.shape for _, yb in batches] == [(s,) for s in sizes]
    assert data.n_batches(m, batch_size) == len(sizes)


def test_minibatches_every_example_once_and_rows_aligned(getkey):
    X, Y = _numbered(148)
    batches = data.minibatches(getkey(), X, Y, 64)
    seen = np.concatenate([np.asarray(yb) for _, yb in batches])
    np.testing.assert_array_equal(np.sort(seen), np.arange(148))
    assert not np.array_equal(seen, np.arange(148)), "the examples were not shuffled"
    for xb, yb in batches:
        # X rows and Y rows are permuted together, and each X row is intact.
        np.testing.assert_array_equal(np.asarray(xb[:, 0]), np.asarray(yb))
        np.testing.assert_array_equal(np.asarray(xb), np.asarray(X)[np.asarray(yb)])


def test_minibatches_same_key_same_batches_and_keys_differ(getkey):
    X, Y = _numbered(100)
    key = getkey()
    a = data.minibatches(key, X, Y, 32)
    b = data.minibatches(key, X, Y, 32)
    chex.assert_trees_all_equal(a, b)
    c = data.minibatches(getkey(), X, Y, 32)
    assert not all(np.array_equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))


def test_minibatches_keep_float64():
    with jax.enable_x64(True):
        X = jnp.ones((10, 2), jnp.float64)
        Y = jnp.zeros(10, jnp.float64)
        (xb, yb), *_ = data.minibatches(jax.random.key(0), X, Y, 4)
        assert xb.dtype == jnp.float64 and yb.dtype == jnp.float64


def test_minibatches_accept_numpy_and_multi_column_labels():
    X = np.arange(12, dtype=np.float32).reshape(6, 2)
    Y = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]  # one-hot rows
    batches = data.minibatches(jax.random.key(1), X, Y, 4)
    assert [yb.shape for _, yb in batches] == [(4, 3), (2, 3)]
    assert all(isinstance(xb, jax.Array) for xb, _ in batches)


# --------------------------------------------------------------------------------------------------
# Fixed-shape mini-batches


class FixedMinibatchesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_every_example_once_per_epoch(self):
        X, Y = _numbered(148)
        fn = self.variant(data.fixed_minibatches, static_argnames="batch_size")
        b = fn(jax.random.key(3), X, Y, batch_size=64)
        assert b.X.shape == (3, 64, 3) and b.Y.shape == (3, 64) and b.mask.shape == (3, 64)
        assert b.mask.dtype == jnp.bool_
        np.testing.assert_array_equal(np.asarray(b.mask.sum(axis=1)), [64, 64, 20])
        real = np.asarray(b.Y)[np.asarray(b.mask)]
        np.testing.assert_array_equal(np.sort(real), np.arange(148))
        # Padding slots repeat valid examples, with X and Y rows still aligned.
        padding = np.asarray(b.Y)[~np.asarray(b.mask)]
        assert padding.size == 3 * 64 - 148 and np.all((padding >= 0) & (padding < 148))
        np.testing.assert_array_equal(np.asarray(b.X[..., 0]), np.asarray(b.Y))

    @chex.variants(with_jit=True, without_jit=True)
    def test_same_batches_as_list_form(self):
        X, Y = _numbered(148)
        key = jax.random.key(5)
        fixed = self.variant(data.fixed_minibatches, static_argnames="batch_size")(
            key, X, Y, batch_size=64
        )
        listed = data.minibatches(key, X, Y, 64)
        for i, (xb, yb) in enumerate(listed):
            mask = np.asarray(fixed.mask[i])
            chex.assert_trees_all_equal(fixed.X[i][mask], xb)
            chex.assert_trees_all_equal(fixed.Y[i][mask], yb)

    @chex.variants(with_jit=True, without_jit=True)
    def test_indices_batch_size_larger_than_m(self):
        fn = self.variant(data.minibatch_indices, static_argnums=(1, 2))
        idx, mask = fn(jax.random.key(0), 3, 8)
        assert idx.shape == (1, 8) and idx.dtype == jnp.int32
        np.testing.assert_array_equal(np.sort(np.asarray(idx)[np.asarray(mask)]), [0, 1, 2])
        assert int(mask.sum()) == 3 and np.all((np.asarray(idx) >= 0) & (np.asarray(idx) < 3))


def test_fixed_minibatches_compile_once_across_keys():
    X, Y = _numbered(148)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def epoch(key, X, Y):
        return data.fixed_minibatches(key, X, Y, 64)

    first = epoch(jax.random.key(0), X, Y)
    for seed in range(1, 4):
        other = epoch(jax.random.key(seed), X, Y)
        assert not np.array_equal(np.asarray(first.Y), np.asarray(other.Y))
    chex.assert_trees_all_equal(epoch(jax.random.key(0), X, Y), first)


def test_masked_mean_equals_unpadded_mean():
    rng = np.random.default_rng(0)
    values = jnp.asarray(rng.normal(size=(64,)).astype(np.float32))
    mask = jnp.arange(64) < 20
    chex.assert_trees_all_close(data.masked_mean(values, mask), jnp.mean(values[:20]), rtol=1e-6)
    # Padding may hold anything, inf and NaN included, without leaking into the mean.
    poisoned = values.at[20:].set(jnp.nan).at[30].set(jnp.inf)
    chex.assert_trees_all_close(data.masked_mean(poisoned, mask), jnp.mean(values[:20]), rtol=1e-6)
    # A (n_batches, batch_size) mask over all batches at once.
    chex.assert_trees_all_close(
        data.masked_mean(values.reshape(4, 16), mask.reshape(4, 16)),
        jnp.mean(values[:20]),
        rtol=1e-6,
    )


def test_masked_mean_rejects_bad_masks():
    with pytest.raises(TypeError, match="mask must be a bool array"):
        data.masked_mean(jnp.ones(3), jnp.ones(3))
    with pytest.raises(ValueError, match="does not broadcast"):
        data.masked_mean(jnp.ones(3), jnp.ones(4, bool))


def test_scanned_epoch_with_masked_mean_matches_list_form():
    """A gradient-descent epoch in lax.scan over padded batches equals the loop over batches."""
    rng = np.random.default_rng(1)
    X = jnp.asarray(rng.normal(size=(148, 3)).astype(np.float32))
    Y = jnp.asarray(rng.normal(size=(148,)).astype(np.float32))
    w0 = jnp.asarray([0.1, -0.2, 0.3], jnp.float32)
    lr = 0.1
    key = jax.random.key(11)

    def per_example(w, x, y):
        return jnp.square(x @ w - y)

    w = w0
    for xb, yb in data.minibatches(key, X, Y, 64):
        w = w - lr * jax.grad(lambda w, xb=xb, yb=yb: jnp.mean(per_example(w, xb, yb)))(w)

    @jax.jit
    def scanned(w, key):
        batches = data.fixed_minibatches(key, X, Y, 64)

        def step(w, b):
            xb, yb, mask = b
            g = jax.grad(lambda w: data.masked_mean(per_example(w, xb, yb), mask))(w)
            return w - lr * g, None

        return jax.lax.scan(step, w, tuple(batches))[0]

    chex.assert_trees_all_close(scanned(w0, key), w, rtol=1e-5, atol=1e-6)


# Every new m compiles a permutation (about 0.3 s on a shared CPU): a third of the examples.
@settings(max_examples=max(5, settings.default.max_examples // 3))
@given(m=st.integers(1, 150), batch_size=st.integers(1, 160), seed=st.integers(0, 2**31 - 1))
def test_property_sizes_add_up_and_each_index_once(m, batch_size, seed):
    key = jax.random.key(seed)
    nb = data.n_batches(m, batch_size)
    assert (nb - 1) * batch_size < m <= nb * batch_size
    idx, mask = data.minibatch_indices(key, m, batch_size)
    assert idx.shape == mask.shape == (nb, batch_size)
    assert int(mask.sum()) == m
    np.testing.assert_array_equal(np.sort(np.asarray(idx)[np.asarray(mask)]), np.arange(m))
    X, Y = _numbered(m, n_features=1)
    batches = data.minibatches(key, X, Y, batch_size)
    sizes = [yb.shape[0] for _, yb in batches]
    assert sum(sizes) == m and len(sizes) == nb
    assert all(s == batch_size for s in sizes[:-1]) and 0 < sizes[-1] <= batch_size
    np.testing.assert_array_equal(
        np.sort(np.concatenate([np.asarray(yb) for _, yb in batches])), np.arange(m)
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(batch_size=0), ValueError, "batch_size must be a positive int"),
        (dict(batch_size=-3), ValueError, "batch_size must be a positive int"),
        (dict(batch_size=2.5), TypeError, "batch_size must be an int"),
        (dict(batch_size=True), TypeError, "batch_size must be an int"),
        (dict(X=np.zeros((0, 2)), Y=np.zeros(0)), ValueError, "X is empty"),
        (dict(X=np.zeros(5)), ValueError, r"X must have at least 2 dimensions \(m, \.\.\.\)"),
        (dict(Y=np.zeros(4)), ValueError, "Y must have one row per example of X"),
        (dict(Y=np.float32(1)), ValueError, "Y must have one row per example of X"),
        (dict(key=None), TypeError, "needs a PRNG key"),
    ],
)
@pytest.mark.parametrize("fn", [data.minibatches, data.fixed_minibatches])
def test_minibatches_bad_inputs(fn, kwargs, error, match):
    args = dict(key=jax.random.key(0), X=np.zeros((5, 2)), Y=np.zeros(5), batch_size=2)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        fn(args["key"], args["X"], args["Y"], args["batch_size"])


def test_n_batches_and_indices_bad_inputs():
    with pytest.raises(ValueError, match="m must be a positive int"):
        data.n_batches(0, 4)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        data.minibatch_indices(jax.random.key(0), 10, 4.0)


# --------------------------------------------------------------------------------------------------
# split


def test_split_sizes_disjoint_and_aligned(getkey):
    X, Y = _numbered(148)
    (Xtr, Ytr), (Xd, Yd), (Xte, Yte) = data.split(getkey(), X, Y)
    assert (Xtr.shape[0], Xd.shape[0], Xte.shape[0]) == (90, 29, 29)
    ids = [np.asarray(y) for y in (Ytr, Yd, Yte)]
    np.testing.assert_array_equal(np.sort(np.concatenate(ids)), np.arange(148))
    for x, y in ((Xtr, Ytr), (Xd, Yd), (Xte, Yte)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(X)[np.asarray(y)])
    assert not np.array_equal(ids[0], np.arange(90)), "split did not shuffle"


@pytest.mark.parametrize(
    "m, fractions, sizes",
    [
        (1000, (0.98, 0.01, 0.01), (980, 10, 10)),
        (100, (0.7, 0.3), (70, 30)),
        (100, (0.42, 0.29, 0.29), (42, 29, 29)),  # 0.29 * 100 is 28.999999999999996 in floats
        (10, (0.5, 0.25, 0.25), (6, 2, 2)),  # remainders go to train
    ],
)
def test_split_fractions(m, fractions, sizes):
    X, Y = _numbered(m, n_features=1)
    parts = data.split(jax.random.key(0), X, Y, fractions)
    assert tuple(x.shape[0] for x, _ in parts) == sizes
    assert tuple(y.shape[0] for _, y in parts) == sizes


def test_split_same_key_same_split(getkey):
    X, Y = _numbered(50)
    key = getkey()
    chex.assert_trees_all_equal(data.split(key, X, Y), data.split(key, X, Y))
    assert not np.array_equal(
        np.asarray(data.split(key, X, Y)[0][1]), np.asarray(data.split(getkey(), X, Y)[0][1])
    )


@pytest.mark.parametrize(
    "m, fractions, error, match",
    [
        (3, (0.6, 0.2, 0.2), ValueError, "the dev set would be empty"),
        (100, (0.5, 0.3, 0.3), ValueError, "fractions must sum to 1"),
        (100, (1.2, -0.2), ValueError, "fractions must all be > 0"),
        (100, (1.0,), ValueError, "fractions must have 2"),
        (100, (0.25,) * 4, ValueError, "fractions must have 2"),
        (100, "0.5", TypeError, "fractions must be a sequence"),
        (100, (0.5, "0.5"), TypeError, "fractions must hold real numbers"),
    ],
)
def test_split_bad_inputs(m, fractions, error, match):
    X, Y = _numbered(m, n_features=1)
    with pytest.raises(error, match=match):
        data.split(jax.random.key(0), X, Y, fractions)


# --------------------------------------------------------------------------------------------------
# standardize


def test_standardize_uses_train_statistics_only():
    rng = np.random.default_rng(0)
    X_train = rng.normal([1.0, -5.0], [2.0, 0.5], size=(500, 2)).astype(np.float32)
    X_dev = rng.normal([3.0, -5.0], [2.0, 0.5], size=(200, 2)).astype(np.float32)
    stats = data.fit_standardizer(X_train)
    assert isinstance(stats, data.Standardizer)
    np.testing.assert_allclose(stats.mean, X_train.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.std, X_train.std(0), rtol=1e-5)  # biased (ddof=0)
    Z_train = data.standardize(X_train, stats)
    np.testing.assert_allclose(np.asarray(Z_train).mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(Z_train).std(0), 1.0, rtol=1e-5)
    Z_dev = np.asarray(data.standardize(X_dev, stats))
    np.testing.assert_allclose(
        Z_dev.mean(0), (X_dev.mean(0) - X_train.mean(0)) / X_train.std(0), rtol=1e-4, atol=1e-5
    )
    assert Z_dev.mean(0)[0] > 0.5, "dev was standardized with its own mean"


def test_standardize_constant_features_give_zero_not_nan():
    X_train = jnp.asarray([[0.1, 1.0, 7.0], [0.1, 2.0, 7.0], [0.1, 4.0, 7.0]], jnp.float32)
    stats = data.fit_standardizer(X_train)
    Z = np.asarray(data.standardize(X_train, stats))
    assert np.all(np.isfinite(Z))
    np.testing.assert_array_equal(Z[:, 0], 0.0)
    np.testing.assert_array_equal(Z[:, 2], 0.0)
    Z_dev = np.asarray(data.standardize(jnp.asarray([[0.6, 1.0, 9.0]]), stats))
    np.testing.assert_allclose(Z_dev[0, [0, 2]], [0.5, 2.0], rtol=1e-6)


def test_standardize_dtypes():
    stats = data.fit_standardizer(np.array([[0, 2], [2, 4]], np.int32))
    assert stats.mean.dtype == jnp.float32
    assert data.standardize(np.array([[1, 3]], np.int32), stats).dtype == jnp.float32
    with jax.enable_x64(True):
        X = jnp.asarray([[1.0], [2.0], [4.0]], jnp.float64)
        stats = data.fit_standardizer(X)
        Z = data.standardize(X, stats)
        assert Z.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(Z).std(), 1.0, rtol=1e-12)


def test_standardize_bad_inputs():
    stats = data.fit_standardizer(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"X must have shape \(m, 3\)"):
        data.standardize(np.ones((4, 2), np.float32), stats)
    with pytest.raises(TypeError, match="stats must be a Standardizer"):
        data.standardize(np.ones((4, 3), np.float32), (0.0, 1.0))
    with pytest.raises(ValueError, match="X_train is empty"):
        data.fit_standardizer(np.ones((0, 3), np.float32))
    with pytest.raises(ValueError, match=r"X_train must have at least 2 dimensions \(m, \.\.\.\)"):
        data.fit_standardizer(np.ones(3, np.float32))


# --------------------------------------------------------------------------------------------------
# Datasets

MAKERS = {
    "moons": lambda key, n, noise: data.make_moons(key, n, noise=noise),
    "circles": lambda key, n, noise: data.make_circles(key, n, noise=noise),
    "spirals": lambda key, n, noise: data.make_spirals(key, n, n_classes=4, noise=noise),
    "blobs": lambda key, n, noise: data.make_blobs(key, n, centers=5, std=noise),
}
N_CLASSES = {"moons": 2, "circles": 2, "spirals": 4, "blobs": 5}
N = 301  # one size for the dataset tests (each new size compiles); not a multiple of 2, 3, 4 or 5


@pytest.mark.parametrize("name", MAKERS)
def test_dataset_shapes_labels_determinism(name, getkey):
    key = getkey()
    X, Y = MAKERS[name](key, N, 0.2)
    assert X.shape == (N, 2) and X.dtype == jnp.float32
    assert Y.shape == (N,) and Y.dtype == jnp.int32
    counts = np.bincount(np.asarray(Y), minlength=N_CLASSES[name])
    assert len(counts) == N_CLASSES[name] and counts.max() - counts.min() <= 1
    assert np.all(np.isfinite(np.asarray(X)))
    X2, Y2 = MAKERS[name](key, N, 0.2)
    chex.assert_trees_all_equal((X, Y), (X2, Y2))
    X3, _ = MAKERS[name](getkey(), N, 0.2)
    assert not np.array_equal(np.asarray(X), np.asarray(X3))
    assert not np.array_equal(np.asarray(Y), np.sort(np.asarray(Y))), "examples not shuffled"


@pytest.mark.parametrize("name", MAKERS)
def test_dataset_noise_is_gaussian_with_given_std(name):
    # With one key the noiseless points and the permutation are the same: the difference is noise.
    key = jax.random.key(4)
    X0, Y0 = MAKERS[name](key, N, 0.0)
    X1, Y1 = MAKERS[name](key, N, 0.3)
    np.testing.assert_array_equal(np.asarray(Y0), np.asarray(Y1))
    if name == "spirals":  # angle noise: the radius is unchanged
        np.testing.assert_allclose(
            np.linalg.norm(np.asarray(X1), axis=1),
            np.linalg.norm(np.asarray(X0), axis=1),
            atol=1e-6,
        )
    else:
        assert abs(float(np.std(np.asarray(X1 - X0))) - 0.3) < 0.03


def _match_point_sets(X, Y, X_ref, Y_ref):
    X = np.asarray(X, np.float64)
    d = np.abs(X[:, None, :] - X_ref[None, :, :]).sum(-1)
    nearest = d.argmin(1)
    assert d.min(1).max() < 1e-5
    assert len(set(nearest.tolist())) == len(X_ref)
    np.testing.assert_array_equal(np.asarray(Y), Y_ref[nearest])


def test_moons_and_circles_match_scikit_learn_without_noise():
    sk = pytest.importorskip("sklearn.datasets")
    _match_point_sets(
        *data.make_moons(jax.random.key(0), N, noise=0.0), *sk.make_moons(N, shuffle=False)
    )
    _match_point_sets(
        *data.make_circles(jax.random.key(0), N, noise=0.0, factor=0.3),
        *sk.make_circles(N, shuffle=False, factor=0.3),
    )


def test_spirals_and_blobs_geometry():
    X, Y = data.make_spirals(jax.random.key(0), N, n_classes=4, noise=0.0)
    r = np.linalg.norm(np.asarray(X), axis=1)
    assert r.min() == pytest.approx(0.0, abs=1e-7) and r.max() == pytest.approx(1.0, rel=1e-6)
    for j in range(4):  # angle = 2 pi j / 4 + 4 r on class j's arm (with r > 0)
        x, rj = np.asarray(X)[np.asarray(Y) == j], r[np.asarray(Y) == j]
        t = np.arctan2(x[:, 0], x[:, 1])
        expected = 2 * np.pi * j / 4 + 4 * rj
        keep = rj > 1e-3
        np.testing.assert_allclose(np.cos(t - expected)[keep], 1.0, atol=1e-5)
    centers = np.array([[0.0, 0.0], [5.0, 1.0]], np.float32)
    X, Y = data.make_blobs(jax.random.key(0), N, centers=centers, std=0.0)
    np.testing.assert_array_equal(np.asarray(X), centers[np.asarray(Y)])
    X, Y = data.make_blobs(jax.random.key(0), N, centers=3, std=0.0)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(X), axis=1), 2.0, rtol=1e-6)
    assert len(np.unique(np.asarray(X), axis=0)) == 3


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda k: data.make_moons(k, 0), ValueError, "n must be a positive int"),
        (lambda k: data.make_moons(k, 10.0), TypeError, "n must be an int"),
        (lambda k: data.make_moons(k, 10, noise=-0.1), ValueError, "noise must be >= 0"),
        (lambda k: data.make_circles(k, 10, factor=1.0), ValueError, "factor must be in"),
        (lambda k: data.make_spirals(k, 10, n_classes=1), ValueError, "n_classes must be >= 2"),
        (lambda k: data.make_blobs(k, 10, centers=1), ValueError, "centers must be >= 2"),
        (lambda k: data.make_blobs(k, 10, centers=np.ones(3)), ValueError, r"\(K, 2\)"),
        (lambda k: data.make_blobs(k, 10, std=float("nan")), ValueError, "std must be finite"),
        (lambda k: data.make_moons(None, 10), TypeError, "needs a PRNG key"),
    ],
)
def test_dataset_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call(jax.random.key(0))


def test_digits():
    pytest.importorskip("sklearn")
    X, Y = data.load_digits()
    assert X.shape == (1797, 64) and X.dtype == jnp.float32
    assert Y.shape == (1797,) and Y.dtype == jnp.int32
    assert float(X.min()) == 0.0 and float(X.max()) == 1.0
    np.testing.assert_array_equal(np.unique(np.asarray(Y)), np.arange(10))


def test_digits_without_scikit_learn_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        data.load_digits()


@pytest.mark.parametrize(
    "name, n_classes, output, n_features",
    [
        ("moons", 2, "sigmoid", 2),
        ("circles", 2, "sigmoid", 2),
        ("spirals", 3, "softmax", 2),
        ("blobs", 3, "softmax", 2),
        ("digits", 10, "softmax", 64),
    ],
)
def test_load_dataset(name, n_classes, output, n_features):
    if name == "digits":
        pytest.importorskip("sklearn")
    ds = data.load_dataset(name, jax.random.key(0), n=N, noise=0.3)
    assert isinstance(ds, data.Dataset)
    assert (ds.name, ds.n_classes, ds.output) == (name, n_classes, output)
    assert ds.X.shape[1] == n_features and ds.X.shape[0] == ds.Y.shape[0]
    assert ds.X.shape[0] == (1797 if name == "digits" else N)
    assert ds.image_shape == ((8, 8) if name == "digits" else None)
    y = np.asarray(ds.Y)
    assert y.min() == 0 and y.max() == n_classes - 1


def test_load_dataset_defaults_and_errors():
    ds = data.load_dataset("moons", jax.random.key(0))
    chex.assert_trees_all_equal((ds.X, ds.Y), data.make_moons(jax.random.key(0), 600, noise=0.2))
    with pytest.raises(ValueError, match="name must be one of"):
        data.load_dataset("mnist", jax.random.key(0))
    with pytest.raises(TypeError, match="needs a PRNG key"):
        data.load_dataset("circles", None)


# --------------------------------------------------------------------------------------------------
# augment


def _images(m=40, H=6, W=5, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(0.1, 1.0, size=(m, H, W)).astype(np.float32))


def _shifted(image, dy, dx):
    """Reference: out[i, j] = image[i - dy, j - dx], zero outside."""
    H, W = image.shape
    out = np.zeros_like(image)
    for i in range(H):
        for j in range(W):
            if 0 <= i - dy < H and 0 <= j - dx < W:
                out[i, j] = image[i - dy, j - dx]
    return out


class AugmentTest(chex.TestCase):
    def _fn(self):
        return self.variant(data.augment, static_argnames=("flip", "max_shift", "image_shape"))

    @chex.variants(with_jit=True, without_jit=True)
    def test_flips_are_exact_mirror_images(self):
        images = _images()
        out = np.asarray(self._fn()(jax.random.key(0), images, flip=True, max_shift=0))
        images = np.asarray(images)
        same = np.all(out == images, axis=(1, 2))
        mirrored = np.all(out == images[:, :, ::-1], axis=(1, 2))
        assert np.all(same | mirrored)
        assert 5 < mirrored.sum() < 35 and same.sum() > 5  # about half of 40 flipped

    @chex.variants(with_jit=True, without_jit=True)
    def test_shifts_move_pixels_with_zero_fill(self):
        images = np.asarray(_images())
        out = np.asarray(self._fn()(jax.random.key(1), images, flip=False, max_shift=1))
        shifts = []
        for k in range(len(images)):
            found = [
                (dy, dx)
                for dy in (-1, 0, 1)
                for dx in (-1, 0, 1)
                if np.array_equal(out[k], _shifted(images[k], dy, dx))
            ]
            assert len(found) == 1, f"image {k} is not a shift of input {k}"
            shifts.append(found[0])
        assert len(set(shifts)) >= 6, "shifts are not spread over [-1, 1]^2"

    @chex.variants(with_jit=True, without_jit=True)
    def test_flat_rows_with_image_shape(self):
        images = _images(m=8, H=8, W=8)
        key = jax.random.key(2)
        flat = self._fn()(key, images.reshape(8, 64), max_shift=2, image_shape=(8, 8))
        assert flat.shape == (8, 64) and flat.dtype == jnp.float32
        chex.assert_trees_all_equal(
            flat.reshape(8, 8, 8), self._fn()(key, images, max_shift=2, image_shape=None)
        )


def test_augment_same_key_same_result_and_identity_when_off(getkey):
    images = _images()
    key = getkey()
    chex.assert_trees_all_equal(data.augment(key, images), data.augment(key, images))
    assert not np.array_equal(
        np.asarray(data.augment(key, images)), np.asarray(data.augment(getkey(), images))
    )
    chex.assert_trees_all_equal(data.augment(key, images, flip=False, max_shift=0), images)


def test_augment_on_digits_keeps_pixels_in_range():
    pytest.importorskip("sklearn")
    X, _ = data.load_digits()
    out = data.augment(jax.random.key(0), X[:100], flip=False, max_shift=1, image_shape=(8, 8))
    assert out.shape == (100, 64)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not np.array_equal(np.asarray(out), np.asarray(X[:100]))


@pytest.mark.parametrize(
    "images, kwargs, error, match",
    [
        (np.zeros((4, 64)), {}, ValueError, "pass image_shape"),
        (np.zeros((4, 64)), dict(image_shape=(8, 7)), ValueError, "H \\* W == 64"),
        (np.zeros((4, 8, 8)), dict(image_shape=(4, 16)), ValueError, "does not match"),
        (np.zeros((4, 8, 8)), dict(max_shift=8), ValueError, "max_shift must be smaller"),
        (np.zeros((4, 8, 8)), dict(max_shift=-1), ValueError, "max_shift must be >= 0"),
        (np.zeros((4, 8, 8)), dict(max_shift=1.0), TypeError, "max_shift must be an int"),
        (np.zeros((4, 8, 8)), dict(flip=1), TypeError, "flip must be a bool"),
        (np.zeros((0, 8, 8)), {}, ValueError, "images is empty"),
        (np.zeros((2, 2, 8, 8, 1)), {}, ValueError, r"images must have shape \(m, H, W\)"),
        (np.zeros((4, 192)), dict(image_shape=(8, 8, 2)), ValueError, r"H \* W \* C == 192"),
        (np.zeros((4, 64)), dict(image_shape=(8, 8, 1, 1)), ValueError, r"image_shape must be"),
        (np.zeros((4, 8, 8, 3)), dict(image_shape=(8, 8)), ValueError, "does not match"),
        (np.zeros((4, 8, 3, 3)), dict(max_shift=3), ValueError, r"smaller than the image \(8x3\)"),
    ],
)
def test_augment_bad_inputs(images, kwargs, error, match):
    with pytest.raises(error, match=match):
        data.augment(jax.random.key(0), images, **kwargs)


def test_public_names():
    for name in data.__all__:
        assert hasattr(data, name)
    assert set(data.DATASETS) == {"moons", "circles", "spirals", "blobs", "digits"}


# --------------------------------------------------------------------------------------------------
# Any X of shape (m, ...): images (m, H, W, C) with one-hot labels (m, C)


def _numbered_images(m, H=4, W=3, C=2):
    """Images whose pixels encode (example, position), and one-hot labels naming the example."""
    X = np.arange(m, dtype=np.float32)[:, None, None, None] * 1000.0 + np.arange(
        H * W * C, dtype=np.float32
    ).reshape(H, W, C)
    return jnp.asarray(X), jnp.asarray(np.eye(m, dtype=np.float32))


def _assert_paired(xb, yb, X):
    """Each image of ``xb`` is, intact, the example that its one-hot row in ``yb`` names."""
    ids = np.argmax(np.asarray(yb), axis=-1)
    np.testing.assert_array_equal(np.asarray(xb), np.asarray(X)[ids])
    return ids


def test_minibatches_images_and_one_hot(getkey):
    X, Y = _numbered_images(37)
    key = getkey()
    batches = data.minibatches(key, X, Y, 16)
    assert [xb.shape for xb, _ in batches] == [(16, 4, 3, 2), (16, 4, 3, 2), (5, 4, 3, 2)]
    assert [yb.shape for _, yb in batches] == [(16, 37), (16, 37), (5, 37)]
    ids = np.concatenate([_assert_paired(xb, yb, X) for xb, yb in batches])
    np.testing.assert_array_equal(np.sort(ids), np.arange(37))
    # The permutation does not depend on X's shape: the same key shuffles dense rows alike.
    dense = data.minibatches(key, *_numbered(37), 16)
    np.testing.assert_array_equal(ids, np.concatenate([np.asarray(yb) for _, yb in dense]))
    chex.assert_trees_all_equal(batches, data.minibatches(key, X, Y, 16))


def test_minibatches_sequences_with_index_labels():
    X = jnp.arange(10 * 7 * 3, dtype=jnp.float32).reshape(10, 7, 3)  # (m, T, n_features)
    Y = jnp.arange(10, dtype=jnp.int32)
    batches = data.minibatches(jax.random.key(0), X, Y, 4)
    assert [(xb.shape, yb.shape) for xb, yb in batches] == [
        ((4, 7, 3), (4,)),
        ((4, 7, 3), (4,)),
        ((2, 7, 3), (2,)),
    ]
    for xb, yb in batches:
        np.testing.assert_array_equal(np.asarray(xb), np.asarray(X)[np.asarray(yb)])


class FixedMinibatchesImagesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_images_one_hot_padded_and_paired(self):
        X, Y = _numbered_images(37)
        key = jax.random.key(8)
        b = self.variant(data.fixed_minibatches, static_argnames="batch_size")(
            key, X, Y, batch_size=16
        )
        assert b.X.shape == (3, 16, 4, 3, 2) and b.Y.shape == (3, 16, 37)
        np.testing.assert_array_equal(np.asarray(b.mask.sum(axis=1)), [16, 16, 5])
        # Real and padding slots alike hold whole images paired with their labels.
        ids = _assert_paired(b.X.reshape(48, 4, 3, 2), b.Y.reshape(48, 37), X)
        np.testing.assert_array_equal(np.sort(ids[np.asarray(b.mask).ravel()]), np.arange(37))
        for i, (xb, yb) in enumerate(data.minibatches(key, X, Y, 16)):
            mask = np.asarray(b.mask[i])
            chex.assert_trees_all_equal((b.X[i][mask], b.Y[i][mask]), (xb, yb))


def test_split_images_and_one_hot(getkey):
    X, Y = _numbered_images(37)
    key = getkey()
    parts = data.split(key, X, Y)
    assert [x.shape for x, _ in parts] == [(23, 4, 3, 2), (7, 4, 3, 2), (7, 4, 3, 2)]
    assert [y.shape for _, y in parts] == [(23, 37), (7, 37), (7, 37)]
    ids = np.concatenate([_assert_paired(x, y, X) for x, y in parts])
    np.testing.assert_array_equal(np.sort(ids), np.arange(37))
    chex.assert_trees_all_equal(parts, data.split(key, X, Y))


def test_standardizer_per_pixel_and_channel():
    rng = np.random.default_rng(5)
    H, W, C = 4, 3, 2
    center = rng.normal(0.0, 5.0, (H, W, C))
    spread = rng.uniform(0.5, 3.0, (H, W, C))
    X_train = (center + spread * rng.normal(size=(200, H, W, C))).astype(np.float32)
    X_train[:, 1, 2, 0] = 7.0  # a constant position: standardizes to 0, not NaN
    stats = data.fit_standardizer(X_train)
    chex.assert_shape((stats.mean, stats.std), (H, W, C))
    expected_std = X_train.std(0)
    expected_std[1, 2, 0] = 1.0
    np.testing.assert_allclose(stats.mean, X_train.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats.std, expected_std, rtol=1e-5)
    Z = np.asarray(data.standardize(X_train, stats))
    assert Z.shape == X_train.shape and np.all(np.isfinite(Z))
    np.testing.assert_array_equal(Z[:, 1, 2, 0], 0.0)
    keep = np.ones((H, W, C), bool)
    keep[1, 2, 0] = False  # every other position: mean 0 and std 1
    np.testing.assert_allclose(Z.mean(0)[keep], 0.0, atol=1e-5)
    np.testing.assert_allclose(Z.std(0)[keep], 1.0, rtol=1e-4)


def test_standardizer_per_channel_by_reshape():
    rng = np.random.default_rng(6)
    X = (rng.normal(size=(30, 5, 5, 3)) * [1.0, 2.0, 4.0] + [0.0, 10.0, -3.0]).astype(np.float32)
    stats = data.fit_standardizer(X.reshape(-1, 3))
    chex.assert_shape((stats.mean, stats.std), (3,))
    np.testing.assert_allclose(stats.mean, X.mean((0, 1, 2)), rtol=1e-4, atol=1e-5)
    Z = np.asarray(data.standardize(X, stats))
    np.testing.assert_allclose(Z.mean((0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(Z.std((0, 1, 2)), 1.0, rtol=1e-4)


def test_standardize_images_bad_shapes():
    stats = data.fit_standardizer(np.ones((4, 4, 3, 2), np.float32))
    with pytest.raises(ValueError, match=r"X must have shape \(m, 4, 3, 2\)"):
        data.standardize(np.ones((4, 4, 3, 3), np.float32), stats)
    with pytest.raises(ValueError, match=r"X must have shape \(m, 4, 3, 2\)"):
        data.standardize(np.ones((4, 3, 2), np.float32), stats)
    with pytest.raises(ValueError, match="X_train is empty"):
        data.fit_standardizer(np.ones((0, 4, 3, 2), np.float32))


def _color_images(m=12, H=6, W=5, C=3, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(0.1, 1.0, size=(m, H, W, C)).astype(np.float32))


class AugmentImagesTest(chex.TestCase):
    def _fn(self):
        return self.variant(data.augment, static_argnames=("flip", "max_shift", "image_shape"))

    @chex.variants(with_jit=True, without_jit=True)
    def test_channels_share_each_images_flip_and_shift(self):
        images = _color_images()
        key = jax.random.key(9)
        out = self._fn()(key, images, max_shift=2)
        assert out.shape == images.shape and out.dtype == images.dtype
        # Every channel is moved exactly as the grayscale image of that channel would be.
        for c in range(3):
            chex.assert_trees_all_equal(
                out[..., c], self._fn()(key, images[..., c], max_shift=2, image_shape=None)
            )

    @chex.variants(with_jit=True, without_jit=True)
    def test_flat_rows_with_channels(self):
        images = _color_images()
        key = jax.random.key(10)
        flat = self._fn()(key, images.reshape(12, -1), max_shift=1, image_shape=(6, 5, 3))
        assert flat.shape == (12, 90)
        chex.assert_trees_all_equal(flat.reshape(images.shape), self._fn()(key, images))


def test_augment_images_same_key_same_result_identity_when_off(getkey):
    images = _color_images()
    key = getkey()
    chex.assert_trees_all_equal(data.augment(key, images), data.augment(key, images))
    assert not np.array_equal(
        np.asarray(data.augment(key, images)), np.asarray(data.augment(getkey(), images))
    )
    chex.assert_trees_all_equal(data.augment(key, images, flip=False, max_shift=0), images)


@pytest.mark.parametrize(
    "fn", [data.minibatches, data.fixed_minibatches, lambda k, X, Y, b: data.split(k, X, Y)]
)
@pytest.mark.parametrize(
    "Y, match",
    [
        (np.zeros((4, 3)), r"Y must have one row per example of X: m = 5 rows"),
        (np.float32(1), r"Y must have one row per example of X"),
    ],
)
def test_images_labels_must_have_m_rows(fn, Y, match):
    with pytest.raises(ValueError, match=match):
        fn(jax.random.key(0), np.zeros((5, 4, 4, 3)), Y, 2)
