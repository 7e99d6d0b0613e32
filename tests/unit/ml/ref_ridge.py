"""Reference ridge for test_linear.c: numpy.linalg.solve on the same data.

Reads a text file: first line "n d lambda fit_intercept", then n lines of d
features and the target. Prints the intercept then the d coefficients, one per
line, with 17 significant digits. The intercept is unpenalized: the problem is
solved on centred data, the textbook equivalent of augmenting X with a column
of ones whose coefficient is not in the penalty.
"""
import sys

import numpy as np

with open(sys.argv[1]) as f:
    n, d, lam, fit_icpt = f.readline().split()
    n, d, lam, fit_icpt = int(n), int(d), float(lam), int(fit_icpt)
    data = np.loadtxt(f, dtype=np.float64).reshape(n, d + 1)
X, y = data[:, :d], data[:, d]
if fit_icpt:
    mx, my = X.mean(axis=0), y.mean()
else:
    mx, my = np.zeros(d), 0.0
Xc, yc = X - mx, y - my
w = np.linalg.solve(Xc.T @ Xc + lam * np.eye(d), Xc.T @ yc)
b = my - mx @ w
print("%.17g" % b)
for v in w:
    print("%.17g" % v)
