#!/usr/bin/python3
"""drift_reference.py - scipy's answers for the drift statistics of src/ml/drift.c.

Run by tests/unit/ml/test_drift.c with /usr/bin/python3 (scipy 1.10):

    drift_reference.py OUT_FILE

writes every case as data: a line "case KIND NAME", then lines "KEY v1 v2 ..."
(floats in repr form, so they round-trip exactly), then "end". The C test
recomputes each case and compares with the "expect" line. Inputs are seeded
(numpy default_rng) so the file is the same on every run.
"""
import sys
import warnings

import numpy as np
import scipy
from scipy import special, stats
from scipy.spatial import distance


def fmt(vals):
    return " ".join(repr(float(v)) for v in vals)


class Out:
    def __init__(self, f):
        self.f = f
        self.n = 0

    def case(self, kind, name, **arrays):
        self.f.write(f"case {kind} {name}\n")
        for k, v in arrays.items():
            v = np.atleast_1d(np.asarray(v, dtype=float))
            self.f.write(f"{k} {fmt(v)}\n")
        self.f.write("end\n")
        self.n += 1


MODE = {"auto": 0, "exact": 1, "asymp": 2}


def ks_case(out, name, a, b, mode="auto"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's exact -> asymp notice
        r = stats.ks_2samp(a, b, method=mode)
    out.case("ks", name, mode=MODE[mode], a=a, b=b, expect=[r.statistic, r.pvalue])


def main():
    assert scipy.__version__.startswith("1.10"), scipy.__version__
    rng = np.random.default_rng(20240611)
    with open(sys.argv[1], "w") as f:
        out = Out(f)
        # --- KS two-sample: sizes, ties, shifts, edge cases ---
        ks_case(out, "n1_n1_equal", [1.0], [1.0])
        ks_case(out, "n1_n1_diff", [1.0], [2.0])
        ks_case(out, "n1_n5", [0.5], rng.normal(size=5))
        ks_case(out, "identical_30", np.arange(30.0), np.arange(30.0))
        ks_case(out, "small_5_7", rng.normal(size=5), rng.normal(size=7))
        ks_case(out, "small_20_20_shift", rng.normal(size=20), rng.normal(0.8, size=20))
        ks_case(out, "ties_ints_40_60", rng.integers(0, 5, 40), rng.integers(0, 6, 60))
        ks_case(out, "ties_ints_eq_100", rng.integers(0, 4, 100), rng.integers(0, 4, 100))
        ks_case(out, "discrete_binary_300_200", rng.integers(0, 2, 300), rng.integers(0, 2, 200))
        ks_case(out, "medium_300_400", rng.normal(size=300), rng.normal(size=400))
        ks_case(out, "medium_300_400_shift", rng.normal(size=300), rng.normal(0.3, size=400))
        ks_case(out, "medium_1000_1000", rng.normal(size=1000), rng.normal(size=1000))
        ks_case(out, "medium_1000_1000_shift", rng.normal(size=1000), rng.normal(0.2, size=1000))
        ks_case(out, "exact_3000_2000_gcd", rng.normal(size=3000), rng.normal(size=2000))
        ks_case(out, "exact_10000_9999", rng.normal(size=10000), rng.normal(size=9999))
        ks_case(out, "exact_10000_9999_shift", rng.normal(size=10000),
                rng.normal(0.05, size=9999))
        ks_case(out, "exact_5000_7000_big_shift", rng.normal(size=5000),
                rng.normal(0.3, size=7000))
        ks_case(out, "asymp_12000_15000", rng.normal(size=12000), rng.normal(size=15000))
        ks_case(out, "asymp_12000_15000_shift", rng.normal(size=12000),
                rng.normal(0.03, size=15000))
        ks_case(out, "asymp_20000_30", rng.normal(size=20000), rng.normal(size=30))
        ks_case(out, "asymp_20000_100_shift", rng.normal(size=20000), rng.normal(0.5, size=100))
        ks_case(out, "asymp_40000_40000_tiny", rng.normal(size=40000), rng.normal(size=40000))
        ks_case(out, "asymp_300000_200000", rng.normal(size=300000), rng.normal(size=200000))
        ks_case(out, "forced_asymp_50_60", rng.normal(size=50), rng.normal(size=60), "asymp")
        ks_case(out, "forced_asymp_500_800", rng.normal(size=500), rng.normal(0.1, size=800),
                "asymp")
        ks_case(out, "forced_exact_30_45", rng.normal(size=30), rng.normal(size=45), "exact")
        ks_case(out, "exponential_vs_normal", rng.exponential(size=700), rng.normal(1, size=900))
        ks_case(out, "disjoint_8_9", np.arange(8.0), np.arange(100.0, 109.0))
        # Equal sizes with D = 1/n: for some n scipy's exact sum rounds to just
        # above 1, so scipy (and we) fall back to the asymptotic p-value.
        for n in [4, 5, 7, 13, 30, 36, 64]:
            ks_case(out, f"equal_h1_n{n}", np.arange(float(n)), np.arange(float(n)) + 0.5)
            ks_case(out, f"equal_h2_n{n}", np.arange(float(n)), np.arange(float(n)) + 1.5)

        # --- the one-sample Kolmogorov and Smirnov distributions themselves ---
        for n in [1, 2, 5, 10, 50, 100, 140, 141, 500, 1000, 10000, 100000, 100001, 500000, 1000000,
              1000001, 2000000, 5000000]:
            for d in [0.001, 0.004, 0.01, 0.03, 0.05, 0.08, 0.1, 0.2, 0.4, 0.5, 0.7, 0.95]:
                if n * d <= 0.5:
                    continue
                out.case("kstwo", f"n{n}_d{d}", n=n, d=d, expect=stats.kstwo.sf(d, n))
                out.case("smirnov", f"n{n}_d{d}", n=n, d=d, expect=special.smirnov(n, d))

        # --- chi-square distribution and tests ---
        for dof in [1, 2, 3, 7.5, 10, 50, 300, 5000]:
            for x in [0.01, 0.5, 1, 3, 9.5, 20, 80, 400, 6000]:
                out.case("chi2sf", f"dof{dof}_x{x}", x=x, dof=dof, expect=stats.chi2.sf(x, dof))
        for k, n in [(2, 50), (3, 200), (6, 1000), (20, 5000)]:
            obs = rng.multinomial(n, np.ones(k) / k)
            expv = np.full(k, n / k)
            r = stats.chisquare(obs, expv)
            out.case("chisq", f"uniform_k{k}_n{n}", obs=obs, exp=expv,
                     expect=[r.statistic, r.pvalue])
        for name, ref_p, cur_p, nr, nc in [
                ("same", [0.5, 0.3, 0.2], [0.5, 0.3, 0.2], 900, 400),
                ("shift", [0.5, 0.3, 0.2], [0.3, 0.3, 0.4], 900, 400),
                ("many", np.ones(12) / 12, np.r_[np.ones(11) * 0.08, 0.12], 700, 5000),
                ("unseen", [0.6, 0.4, 0.0], [0.5, 0.4, 0.1], 300, 300)]:
            rc = rng.multinomial(nr, ref_p)
            cc = rng.multinomial(nc, cur_p)
            expv = rc * (cc.sum() / rc.sum())
            with np.errstate(divide="ignore", invalid="ignore"):
                r = stats.chisquare(cc, expv)
            out.case("chidrift", name, ref=rc, cur=cc, expect=[r.statistic, r.pvalue])

        # --- two-proportion z-test (pooled), scipy's normal tail as reference ---
        for name, x1, n1, x2, n2 in [("equal", 40, 100, 40, 100), ("shift", 120, 400, 160, 400),
                                     ("tiny_p", 100, 1000, 400, 1000), ("uneven", 3, 17, 30, 90),
                                     ("all_ones", 50, 50, 20, 20)]:
            p1, p2, P = x1 / n1, x2 / n2, (x1 + x2) / (n1 + n2)
            if P in (0, 1):
                z, p = 0.0, 1.0
            else:
                z = (p1 - p2) / np.sqrt(P * (1 - P) * (1 / n1 + 1 / n2))
                p = 2 * stats.norm.sf(abs(z))
            out.case("ztest", name, x=[x1, n1, x2, n2], expect=[z, p])

        # --- Wasserstein ---
        for name, a, b in [("n1", [3.0], [5.0]),
                           ("same", np.arange(10.0), np.arange(10.0)),
                           ("ties", rng.integers(0, 4, 50), rng.integers(0, 5, 70)),
                           ("normal_shift", rng.normal(size=1000), rng.normal(0.3, 2, size=700)),
                           ("large", rng.normal(size=50000), rng.standard_t(5, size=30000))]:
            a, b = np.asarray(a, float), np.asarray(b, float)
            out.case("wasserstein", name, a=a, b=b,
                     expect=[stats.wasserstein_distance(a, b), np.std(a)])

        # --- histogram (clamped), Jensen-Shannon, PSI over Evidently-style bins ---
        for name, ref, cur in [("same_dist", rng.normal(size=2000), rng.normal(size=1500)),
                               ("shifted", rng.normal(size=2000), rng.normal(0.7, size=1500)),
                               ("wider", rng.normal(size=3000), rng.normal(0, 3, size=3000))]:
            nb = int(np.ceil(np.log2(ref.size))) + 1  # Sturges, from the reference only
            edges = np.linspace(ref.min(), ref.max(), nb + 1)
            rc = np.histogram(np.clip(ref, edges[0], edges[-1]), edges)[0]
            cc = np.histogram(np.clip(cur, edges[0], edges[-1]), edges)[0]
            out.case("hist", name, x=cur, edges=edges, expect=cc)
            rp, cp = rc / ref.size, cc / cur.size
            rp, cp = fill_empty(rp), fill_empty(cp)
            for base in [0.0, 2.0]:
                js = distance.jensenshannon(rp, cp, base=None if base == 0 else base)
                out.case("js", f"{name}_base{base}", p=rp, q=cp, base=base, expect=js)
            psi = np.sum((rp - cp) * np.log(rp / cp))
            out.case("psi", name, p=rp, q=cp, expect=psi)
        out.case("js", "unnormalized", p=[1, 2, 3, 0], q=[0, 5, 1, 1], base=0.0,
                 expect=distance.jensenshannon([1, 2, 3, 0], [0, 5, 1, 1]))
        out.case("fill", "small_min", x=[0.5, 0, 0.49995, 0.00005],
                 expect=fill_empty(np.array([0.5, 0, 0.49995, 0.00005])))
        out.case("fill", "plain", x=[0.5, 0, 0.5], expect=fill_empty(np.array([0.5, 0, 0.5])))
    print(f"wrote {out.n} cases")


def fill_empty(p):
    """Evidently's get_binned_data zero filling."""
    p = p.astype(float).copy()
    mn = p[p != 0].min()
    np.place(p, p == 0, mn / 10**6 if mn <= 0.0001 else 0.0001)
    return p


if __name__ == "__main__":
    main()
