"""Times scikit-learn's KMeans (Lloyd) on the data the Rust benchmark wrote, from the same initial centres.

Called by host/benches/kmeans.rs; installs scikit-learn with pip if it is missing.
Usage: sklearn_kmeans.py DATA.f32 N DIM INIT.f32 K MAX_ITER THREADS
Prints one JSON line: {"threads", "n_iter", "seconds", "inertia"} (best of 3 runs).
"""
import json, subprocess, sys, time

try:
    import sklearn  # noqa: F401
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "scikit-learn"])

import numpy as np
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

data_path, n, dim, init_path, k, max_iter, threads = sys.argv[1:]
n, dim, k, max_iter, threads = int(n), int(dim), int(k), int(max_iter), int(threads)
x = np.fromfile(data_path, dtype="<f4").reshape(n, dim)
init = np.fromfile(init_path, dtype="<f4").reshape(k, dim)

best = None
with threadpool_limits(limits=threads):
    for _ in range(3):
        km = KMeans(n_clusters=k, init=init, n_init=1, max_iter=max_iter, tol=0.0, algorithm="lloyd")
        started = time.perf_counter()
        km.fit(x)
        seconds = time.perf_counter() - started
        if best is None or seconds < best["seconds"]:
            best = {"threads": threads, "n_iter": int(km.n_iter_), "seconds": seconds, "inertia": float(km.inertia_)}
print(json.dumps(best))
