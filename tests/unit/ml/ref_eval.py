"""Reference metrics for test_eval.c, in plain numpy/scipy (sklearn is not
installed): the formulas are written out here independently of eval.c.

Usage: ref_eval.py OUT. Writes the random cases to OUT and prints the expected
values on one line: accuracy log_loss roc_auc rmse mae r2 precision recall map
ndcg auc (the last five averaged over users).
"""
import sys

import numpy as np
from scipy.stats import rankdata

rng = np.random.default_rng(7)
n = 1000
y = rng.integers(0, 2, n).astype(float)
score = np.round(rng.normal(y * 0.8, 1.0), 1)           # rounded: many ties
p = 1.0 / (1.0 + np.exp(-score))
p[0], p[1], p[2], p[3] = 0.0, 1.0, 1e-20, 1 - 1e-17     # exercise clipping
ypred = (score > 0).astype(float)
yt = rng.normal(size=n) * 10
yh = yt + rng.normal(size=n)

eps = 1e-15
pc = np.clip(p, eps, 1 - eps)
log_loss = -np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))
ranks = rankdata(score)                                  # average ranks for ties
npos = y.sum()
nneg = n - npos
auc = (ranks[y == 1].sum() - npos * (npos + 1) / 2) / (npos * nneg)
accuracy = np.mean(ypred == y)
rmse = np.sqrt(np.mean((yt - yh) ** 2))
mae = np.mean(np.abs(yt - yh))
r2 = 1 - np.sum((yt - yh) ** 2) / np.sum((yt - yt.mean()) ** 2)

users = []
k = 10
for u in range(60):
    n_cand = int(rng.integers(30, 101))
    n_rel = int(rng.integers(1, 9))
    rel = rng.choice(n_cand, n_rel, replace=False)
    n_recs = int(rng.integers(0, 25))
    recs = rng.permutation(n_cand)[:n_recs]
    hit = np.isin(recs, rel).astype(float)
    hk = hit[:k]
    prec = hk.sum() / k
    rec = hk.sum() / n_rel
    ap = np.sum(np.cumsum(hk) / np.arange(1, len(hk) + 1) * hk) / min(k, n_rel)
    dcg = np.sum(hk / np.log2(np.arange(2, len(hk) + 2)))
    idcg = np.sum(1 / np.log2(np.arange(2, min(k, n_rel) + 2)))
    # AUC: listed items scored by position, every unlisted candidate tied below.
    s = np.full(n_cand, -1.0)
    s[recs] = n_recs - np.arange(n_recs)
    lab = np.isin(np.arange(n_cand), rel)
    if lab.all():
        uauc = np.nan
    else:
        r = rankdata(s)
        uauc = (r[lab].sum() - n_rel * (n_rel + 1) / 2) / (n_rel * (n_cand - n_rel))
    users.append((n_cand, rel, recs, prec, rec, ap, dcg / idcg, uauc))

with open(sys.argv[1], "w") as f:
    f.write("%d\n" % n)
    for i in range(n):
        f.write("%.17g %.17g %.17g %.17g %.17g %.17g\n" % (y[i], score[i], p[i], yt[i], yh[i], ypred[i]))
    f.write("%d %d\n" % (len(users), k))
    for (n_cand, rel, recs, *_rest) in users:
        f.write("%d %d %s %d %s\n" % (n_cand, len(rel), " ".join(map(str, rel)), len(recs),
                                      " ".join(map(str, recs))))
arr = np.array([u[3:] for u in users], dtype=float)
print(" ".join("%.17g" % v for v in
               [accuracy, log_loss, auc, rmse, mae, r2, *arr[:, :4].mean(axis=0),
                np.nanmean(arr[:, 4])]))
