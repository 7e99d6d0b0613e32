"""xgb_reference.py - Python's xgboost as the reference for tests/unit/ml/test_xgb.c.

Run with /usr/bin/python3 (xgboost 1.7, numpy). Two commands:

  make WORK DATASETS   trains binary, multiclass and regression models on real data and
                       writes, per model NAME: NAME.json (XGBoost JSON), NAME.x.f32 (rows
                       fed to predict), NAME.pred.f32 (Python's predictions), NAME.meta
                       ("rows cols outputs"). Also writes the label-encoded Adult train and
                       test sets (adult_{train,test}.{x,y}.f32, adult.meta) for the C side.
  predict WORK NAME    loads NAME.json (trained by C), predicts NAME.x.f32 and writes
                       NAME.pypred.f32.

Raw float32 files are little-endian row-major; NaN is missing.
"""
import csv
import os
import sys

import numpy as np
import xgboost as xgb

ADULT_NUMERIC = [0, 2, 4, 10, 11, 12]      # age fnlwgt education-num capital-gain/loss hours
ADULT_CATEGORICAL = [1, 3, 5, 6, 7, 8, 9, 13]


def read_adult(path):
    rows = []
    with open(path, newline="") as f:
        for rec in csv.reader(f, skipinitialspace=True):
            if len(rec) != 15:        # adult.test's first line, blank lines
                continue
            rows.append(rec)
    return rows


def adult_numeric(rows):
    x = np.array([[float(r[j]) for j in ADULT_NUMERIC] for r in rows], dtype=np.float32)
    y = np.array([1.0 if r[14].rstrip(".") == ">50K" else 0.0 for r in rows], dtype=np.float32)
    return x, y


def adult_encoded(rows, dicts):
    """Numeric columns plus categorical codes from the training dictionaries (test-only
    encoding: '?' and unseen values are missing)."""
    x, y = adult_numeric(rows)
    cats = np.full((len(rows), len(ADULT_CATEGORICAL)), np.nan, dtype=np.float32)
    for i, r in enumerate(rows):
        for k, j in enumerate(ADULT_CATEGORICAL):
            code = dicts[k].get(r[j])
            if code is not None:
                cats[i, k] = code
    return np.hstack([x, cats]), y


def write(work, name, arr):
    np.ascontiguousarray(arr, dtype="<f4").tofile(os.path.join(work, name))


def save_case(work, name, booster, x):
    booster.save_model(os.path.join(work, name + ".json"))
    pred = booster.predict(xgb.DMatrix(x, missing=np.nan), strict_shape=True)
    write(work, name + ".x.f32", x)
    write(work, name + ".pred.f32", pred)
    with open(os.path.join(work, name + ".meta"), "w") as f:
        f.write("%d %d %d\n" % (x.shape[0], x.shape[1], pred.shape[1]))


def make(work, datasets):
    rng = np.random.default_rng(7)
    train = read_adult(os.path.join(datasets, "adult.data"))
    test = read_adult(os.path.join(datasets, "adult.test"))

    # Binary: numeric Adult columns, with some values knocked out to exercise missing.
    x, y = adult_numeric(train)
    x[rng.random(x.shape) < 0.05] = np.nan
    params = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.3,
              "tree_method": "hist", "seed": 1, "nthread": 1}
    b = xgb.train(params, xgb.DMatrix(x, label=y, missing=np.nan), num_boost_round=40)
    save_case(work, "py_binary", b, x[:1500])

    # Multiclass: hours-per-week band (<40, 40, >40) from the other numeric columns.
    hours = x[:, 5]
    keep = ~np.isnan(hours)
    xm = np.delete(x[keep], 5, axis=1)
    ym = np.where(hours[keep] < 40, 0, np.where(hours[keep] == 40, 1, 2)).astype(np.float32)
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 4, "eta": 0.3,
              "tree_method": "hist", "seed": 1, "nthread": 1}
    b = xgb.train(params, xgb.DMatrix(xm, label=ym, missing=np.nan), num_boost_round=25)
    save_case(work, "py_multi", b, xm[:1500])

    # Regression: bike-sharing hourly counts.
    with open(os.path.join(datasets, "hour.csv"), newline="") as f:
        recs = list(csv.DictReader(f))
    cols = ["season", "yr", "mnth", "hr", "holiday", "weekday", "workingday", "weathersit",
            "temp", "atemp", "hum", "windspeed"]
    xr = np.array([[float(r[c]) for c in cols] for r in recs], dtype=np.float32)
    yr = np.array([float(r["cnt"]) for r in recs], dtype=np.float32)
    params = {"objective": "reg:squarederror", "max_depth": 6, "eta": 0.2,
              "tree_method": "hist", "seed": 1, "nthread": 1}
    b = xgb.train(params, xgb.DMatrix(xr, label=yr), num_boost_round=40)
    save_case(work, "py_reg", b, xr[:1500])

    # The Adult train/test sets for the C side to train on.
    dicts = []
    for j in ADULT_CATEGORICAL:
        values = sorted({r[j] for r in train if r[j] != "?"})
        dicts.append({v: i for i, v in enumerate(values)})
    xtr, ytr = adult_encoded(train, dicts)
    xte, yte = adult_encoded(test, dicts)
    write(work, "adult_train.x.f32", xtr)
    write(work, "adult_train.y.f32", ytr)
    write(work, "adult_test.x.f32", xte)
    write(work, "adult_test.y.f32", yte)
    with open(os.path.join(work, "adult.meta"), "w") as f:
        f.write("%d %d %d\n" % (xtr.shape[0], xte.shape[0], xtr.shape[1]))


def predict(work, name):
    with open(os.path.join(work, name + ".meta")) as f:
        rows, cols, _ = (int(v) for v in f.read().split())
    x = np.fromfile(os.path.join(work, name + ".x.f32"), dtype="<f4").reshape(rows, cols)
    b = xgb.Booster()
    b.load_model(os.path.join(work, name + ".json"))
    pred = b.predict(xgb.DMatrix(x, missing=np.nan), strict_shape=True)
    write(work, name + ".pypred.f32", pred)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "predict":
        predict(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: xgb_reference.py make WORK DATASETS | predict WORK NAME")
