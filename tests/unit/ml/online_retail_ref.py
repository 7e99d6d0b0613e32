"""Reference figures for test_clean.c: Online Retail cleaned to purchases and
aggregated into a user x item matrix, computed independently with the csv
module. Prints one JSON object. Usage: online_retail_ref.py online_retail.csv"""
import csv
import json
import sys
from collections import defaultdict

NON_PRODUCT = {"POST", "DOT", "M", "m", "C2", "D", "S", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS", "B"}


def main(path):
    steps = []
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rows.append(r)
    steps.append(len(rows))
    keep = [
        ("CustomerID", lambda r: r["CustomerID"] != ""),
        ("InvoiceNo", lambda r: not r["InvoiceNo"].startswith("C")),
        ("Quantity", lambda r: float(r["Quantity"]) > 0),
        ("UnitPrice", lambda r: float(r["UnitPrice"]) > 0),
        ("StockCode", lambda r: r["StockCode"] not in NON_PRODUCT),
        ("StockCode", lambda r: not r["StockCode"].startswith("gift_0001_")),
    ]
    for _, pred in keep:
        rows = [r for r in rows if pred(r)]
        steps.append(len(rows))
    count = defaultdict(float)
    qty = defaultdict(float)
    for r in rows:
        key = (r["CustomerID"], r["StockCode"])
        count[key] += 1
        qty[key] += float(r["Quantity"])
    users = {u for u, _ in count}
    items = {i for _, i in count}
    out = {
        "rows_after_step": steps,
        "users": len(users),
        "items": len(items),
        "nnz": len(count),
        "sum_count": sum(count.values()),
        "sum_quantity": sum(qty.values()),
        "max_count": max(count.values()),
        "sample": {"17850/85123A": count[("17850", "85123A")], "12347/22375": count[("12347", "22375")],
                   "qty_14646/23084": qty[("14646", "23084")]},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
