#!/usr/bin/python3
"""bench_drift.py - the scipy side of the drift benchmark (bench/bench_drift.sh).

    bench_drift.py gen FILE [ROWS] [COLS]   write seeded synthetic data
    bench_drift.py run FILE                 time KS + PSI + Jensen-Shannon per column

The file is: int64 rows, int64 cols, then the reference columns and the
current columns, each rows float64 (little endian, column after column).
Columns alternate N(0,1), lognormal, t(4) and a discretized uniform (ties);
every fourth column of the current set is shifted, so the statistics vary.
Binning is the one quern uses for a profile: Sturges' count of uniform bins
over the reference range, current values clamped into the end bins, empty
bins filled as Evidently does; JS in natural log.
"""
import json
import sys
import time

import numpy as np
from scipy import stats
from scipy.spatial import distance


def column(rng, kind, n, shift):
    if kind == 0:
        x = rng.normal(size=n)
    elif kind == 1:
        x = rng.lognormal(size=n)
    elif kind == 2:
        x = rng.standard_t(4, size=n)
    else:
        x = np.floor(rng.uniform(0, 50, size=n))
    return x + shift


def gen(path, rows, cols):
    rng = np.random.default_rng(12345)
    with open(path, "wb") as f:
        np.array([rows, cols], dtype="<i8").tofile(f)
        for side in (0, 1):
            for c in range(cols):
                shift = 0.05 * (c // 4 + 1) if side == 1 and c % 4 == 1 else 0.0
                column(rng, c % 4, rows, shift).astype("<f8").tofile(f)


def fill_empty(p):
    nz = p[p != 0]
    mn = nz.min()
    p = p.copy()
    p[p == 0] = mn / 1e6 if mn <= 0.0001 else 0.0001
    return p


def run(path):
    with open(path, "rb") as f:
        rows, cols = np.fromfile(f, dtype="<i8", count=2)
        data = np.fromfile(f, dtype="<f8").reshape(2, cols, rows)
    ref, cur = data[0], data[1]
    t_ks = t_bins = 0.0
    out = []
    for c in range(cols):
        t0 = time.perf_counter()
        ks = stats.ks_2samp(ref[c], cur[c])
        t1 = time.perf_counter()
        r, k = ref[c], cur[c]
        nb = int(np.ceil(np.log2(r.size))) + 1
        lo, hi = r.min(), r.max()
        edges = np.linspace(lo, hi, nb + 1)
        rp = np.histogram(r, edges)[0] / r.size
        cp = np.histogram(np.clip(k, lo, hi), edges)[0] / k.size
        rp, cp = fill_empty(rp), fill_empty(cp)
        psi = float(np.sum((rp - cp) * np.log(rp / cp)))
        js = float(distance.jensenshannon(rp, cp))
        t2 = time.perf_counter()
        t_ks += t1 - t0
        t_bins += t2 - t1
        out.append({"ks_d": float(ks.statistic), "ks_p": float(ks.pvalue), "psi": psi, "js": js})
    print(json.dumps({"rows": int(rows), "cols": int(cols), "ks_s": t_ks,
                      "psi_js_s": t_bins, "total_s": t_ks + t_bins, "columns": out}))


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1000000,
            int(sys.argv[4]) if len(sys.argv) > 4 else 20)
    else:
        run(sys.argv[2])
