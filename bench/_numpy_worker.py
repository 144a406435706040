"""The course-style numpy peers, run in a subprocess of their own.

The subprocess lets the benchmark drop ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` (which older
OpenBLAS builds on this machine need and which slow a current numpy) for numpy alone, without
touching the environment of the JAX process, the tests or CI. It reports which BLAS kernel numpy then
runs (threadpoolctl).

Usage: ``python -m bench._numpy_worker CASE IN.npz OUT.json``.
"""

import json
import statistics
import sys
import time

import numpy as np


def _blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return [
        {k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
        for d in threadpool_info()
        if d.get("user_api") == "blas"
    ]


# ---- case B: examples as columns, W of shape (n_out, n_in), hand-derived backprop -------------


def _relu(Z):
    return np.maximum(0, Z)


def _sigmoid(Z):
    return 1 / (1 + np.exp(-Z))


def forward_backward(parameters, X, Y, lambd):
    """One forward and backward pass, as the course writes them (L layers, ReLU then sigmoid)."""
    L = len(parameters) // 2
    m = X.shape[1]
    caches = []
    A = X
    for l in range(1, L + 1):
        W, b = parameters["W" + str(l)], parameters["b" + str(l)]
        Z = W @ A + b
        caches.append((A, Z))
        A = _relu(Z) if l < L else _sigmoid(Z)
    AL = A
    grads = {}
    dZ = AL - Y  # sigmoid + cross-entropy
    for l in range(L, 0, -1):
        A_prev, _ = caches[l - 1]
        W = parameters["W" + str(l)]
        grads["dW" + str(l)] = (dZ @ A_prev.T) / m + (lambd / m) * W
        grads["db" + str(l)] = np.sum(dZ, axis=1, keepdims=True) / m
        if l > 1:
            dA_prev = W.T @ dZ
            dZ = dA_prev * (caches[l - 2][1] > 0)  # ReLU'(Z) of the layer below
    return grads


def train_b(parameters, X, Y, learning_rate, lambd, num_iterations):
    L = len(parameters) // 2
    for _ in range(num_iterations):
        grads = forward_backward(parameters, X, Y, lambd)
        for l in range(1, L + 1):
            parameters["W" + str(l)] = (
                parameters["W" + str(l)] - learning_rate * grads["dW" + str(l)]
            )
            parameters["b" + str(l)] = (
                parameters["b" + str(l)] - learning_rate * grads["db" + str(l)]
            )
    return parameters


def case_b(data, reps):
    X = data["X"].T.astype(np.float32)  # (n_x, m)
    Y = data["Y"].astype(np.float32)[None, :]
    L = int(data["L"])
    lr, lambd, steps = float(data["lr"]), np.float32(data["lambd"]), int(data["steps"])

    def fresh():
        p = {}
        for l in range(1, L + 1):
            p["W" + str(l)] = data[f"W{l}"].T.copy()  # fjdl's W is the course's W.T
            p["b" + str(l)] = data[f"b{l}"][:, None].copy()
        return p

    train_b(fresh(), X, Y, lr, lambd, 10)  # warm-up
    times = []
    for _ in range(reps):
        p = fresh()
        t0 = time.perf_counter()
        p = train_b(p, X, Y, np.float32(lr), lambd, steps)
        times.append(time.perf_counter() - t0)
    flat = []
    for l in range(1, L + 1):
        flat += [p["W" + str(l)].T.tolist(), p["b" + str(l)][:, 0].tolist()]
    return times, {"params": flat}


# ---- case E: the course's gradient check, a loop over every parameter --------------------------


def _forward_cost_e(theta, shapes, X, Y, output):
    """Cost of a ReLU network with a sigmoid or softmax output (examples as columns), float64."""
    A = X
    offset = 0
    L = len(shapes)
    for l, (n_out, n_in) in enumerate(shapes):
        W = theta[offset : offset + n_out * n_in].reshape(n_out, n_in)
        offset += n_out * n_in
        b = theta[offset : offset + n_out].reshape(n_out, 1)
        offset += n_out
        Z = W @ A + b
        if l < L - 1:
            A = np.maximum(0, Z)
    m = X.shape[1]
    if output == "sigmoid":
        AL = 1 / (1 + np.exp(-Z[0]))
        return -np.sum(Y * np.log(AL) + (1 - Y) * np.log(1 - AL)) / m
    Z = Z - Z.max(axis=0, keepdims=True)
    logp = Z - np.log(np.exp(Z).sum(axis=0, keepdims=True))
    return -np.sum(logp[Y, np.arange(m)]) / m


def case_e(data, reps):
    del reps  # the loop is slow: timed once
    X = data["X"].T.astype(np.float64)
    output = str(data["output"])
    Y = data["Y"].astype(np.float64 if output == "sigmoid" else np.int64)
    shapes = [tuple(s) for s in data["shapes"].tolist()]
    theta = data["theta"].astype(np.float64)
    eps = float(data["epsilon"])
    t0 = time.perf_counter()
    grad = np.zeros_like(theta)
    for i in range(theta.size):
        theta_plus = np.copy(theta)
        theta_plus[i] += eps
        theta_minus = np.copy(theta)
        theta_minus[i] -= eps
        J_plus = _forward_cost_e(theta_plus, shapes, X, Y, output)
        J_minus = _forward_cost_e(theta_minus, shapes, X, Y, output)
        grad[i] = (J_plus - J_minus) / (2 * eps)
    return [time.perf_counter() - t0], {"grad": grad.tolist()}


def main(argv):
    case, path_in, path_out, reps = argv[0], argv[1], argv[2], int(argv[3])
    data = dict(np.load(path_in))
    times, out = {"b": case_b, "e": case_e}[case](data, reps)
    out.update(
        times=times,
        median_s=statistics.median(times),
        min_s=min(times),
        max_s=max(times),
        reps=len(times),
        numpy=np.__version__,
        blas=_blas_info(),
    )
    with open(path_out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1:])
