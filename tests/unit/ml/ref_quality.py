"""Reference values for test_eval.c's quality metrics, in plain numpy (sklearn
is not installed): Brier score, mean error, the 10-bin calibration table and
CBPE's expected accuracy and ROC AUC, written out here independently of eval.c.

Usage: ref_quality.py OUT. Writes n, then n lines "y p yr yhat" to OUT (a
calibrated synthetic set: y ~ Bernoulli(p)) and prints on one line:
brier mean_error n_0..n_9 rate_0..rate_9 cbpe_accuracy cbpe_auc realised_accuracy realised_auc
"""
import sys

import numpy as np

rng = np.random.default_rng(11)
n = 20000
p = np.round(rng.beta(2, 2, n), 3)            # rounded: ties in p
y = (rng.random(n) < p).astype(float)         # calibrated by construction
yr = rng.normal(size=n) * 5
yhat = yr + 0.7 + rng.normal(size=n)

brier = np.mean((p - y) ** 2)
mean_error = np.mean(yhat - yr)
b = np.minimum((p * 10).astype(int), 9)
counts = np.array([np.sum(b == k) for k in range(10)], dtype=float)
rates = np.array([y[b == k].mean() if counts[k] else np.nan for k in range(10)])

# CBPE: expected confusion matrices over every threshold (sklearn-free ROC).
acc = np.mean(np.maximum(p, 1 - p))
thr = np.unique(p)[::-1]
tpr = [0.0]
fpr = [0.0]
for t in thr:
    sel = p >= t
    tpr.append(p[sel].sum() / p.sum())
    fpr.append((1 - p[sel]).sum() / (1 - p).sum())
auc = np.trapz(tpr, fpr) if hasattr(np, "trapz") else np.trapezoid(tpr, fpr)

# Realised, from the labels (Mann-Whitney with average ranks for ties).
order = np.argsort(p, kind="mergesort")
ranks = np.empty(n)
sp = p[order]
i = 0
while i < n:
    j = i
    while j < n and sp[j] == sp[i]:
        j += 1
    ranks[order[i:j]] = (i + 1 + j) / 2.0
    i = j
npos = y.sum()
nneg = n - npos
r_auc = (ranks[y == 1].sum() - npos * (npos + 1) / 2) / (npos * nneg)
r_acc = np.mean((p >= 0.5) == (y == 1))

with open(sys.argv[1], "w") as f:
    f.write("%d\n" % n)
    for i in range(n):
        f.write("%.17g %.17g %.17g %.17g\n" % (y[i], p[i], yr[i], yhat[i]))
vals = [brier, mean_error] + list(counts) + list(rates) + [acc, auc, r_acc, r_auc]
print(" ".join("%.17g" % v for v in vals))
