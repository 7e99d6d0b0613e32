"""npy_ref.py - the numpy side of test_npy.c and test_als.c.

  npy_ref.py check DIR   loads the arrays test_npy.c wrote into DIR and checks
                         dtype, shape and values; exit status 0 when all agree.
  npy_ref.py make DIR    writes arrays with numpy.save for test_npy.c to read.
  npy_ref.py factors DIR loads an ALS bundle's user/item factors and prints
                         their shapes and dtypes, one line each.
"""
import os
import sys

import numpy as np


def expected():
    return {
        "f4_2d.npy": np.arange(12, dtype="<f4").reshape(3, 4) / 8.0,
        "f8_1d.npy": np.array([1.5, -2.25, 1e300, 0.0], dtype="<f8"),
        "i4_2d.npy": (np.arange(6, dtype="<i4") - 3).reshape(2, 3),
        "i8_1d.npy": np.array([0, -1, 2**40], dtype="<i8"),
        "f4_empty.npy": np.zeros((0, 5), dtype="<f4"),
    }


def check(d):
    ok = True
    for name, want in expected().items():
        got = np.load(os.path.join(d, name))
        if got.dtype != want.dtype or got.shape != want.shape or not np.array_equal(got, want):
            print(f"{name}: got {got.dtype} {got.shape} {got!r}", file=sys.stderr)
            ok = False
    return 0 if ok else 1


def make(d):
    for name, arr in expected().items():
        np.save(os.path.join(d, "np_" + name), arr)
    np.save(os.path.join(d, "np_fortran.npy"), np.asfortranarray(np.ones((3, 2), dtype="<f4")))
    np.save(os.path.join(d, "np_big.npy"), np.ones(3, dtype=">f4"))
    np.save(os.path.join(d, "np_3d.npy"), np.ones((2, 2, 2), dtype="<f4"))
    np.save(os.path.join(d, "np_u1.npy"), np.ones(3, dtype="u1"))
    return 0


def factors(d):
    for name in ("user_factors.npy", "item_factors.npy", "popularity.npy"):
        a = np.load(os.path.join(d, name))
        print(name, a.dtype, "x".join(str(s) for s in a.shape), float(np.abs(a).sum()))
    return 0


if __name__ == "__main__":
    mode, d = sys.argv[1], sys.argv[2]
    sys.exit({"check": check, "make": make, "factors": factors}[mode](d))
