"""make demo CASE=bikes: the second closed loop, on model quality, with the real Bike Sharing data.

Capital Bikeshare's hourly rentals, 2011-2012 (data/bike-sharing). A regressor that predicts
an hour's rentals from its calendar and weather is trained on 2011. In 2012 the service grew:
the same kind of hour rents about two thirds more bikes. The hours look like 2011's to the
model (the same seasons, hours and weather), so data drift barely moves, but its predictions
are now far too low. Only the true counts, arriving as feedback after each hour, show it:

 1. 2011's hours are ingested, cleaned by prep, and XGBoost version 1 is trained (held out: a
    random fifth of 2011's hours) and promoted;
 2. half of 2012's hours (drawn at random over the year) are served, one request each; their
    export lands in ingest, and each hour's true count arrives as feedback for the request id
    that served it. The monitor joins them and reports live RMSE beside version 1's holdout
    RMSE, window after window; the drift report of the same traffic says which features moved;
 3. the quality rule (live RMSE above 1.5x the holdout's for 2 windows) requests a retrain on
    the data up to now; the challenger, trained before October 2012, beats the champion on
    October-December 2012 (the fresh holdout) and is promoted;
 4. the other half of 2012's hours, which no model has seen, are served by version 2 and fed
    back: live RMSE is back under its holdout figure.

Run through scripts/demo.py (`make demo CASE=bikes`), which starts the services and owns the
options; run(d) receives that module for its helpers and settings.
"""
import csv
import json
import lzma
import os
import random

MODEL = "bikes"
RAW, CLEAN = "bike-hours-raw", "bike-hours"
V2_CUTOFF = "2012-10-01"       # the retrain holds out Oct-Dec 2012 (the fresh holdout)
MARGIN = 1.5                   # live RMSE above 1.5 x the holdout RMSE is degraded
WINDOW = 1000                  # labelled predictions (and logged predictions) per monitor window
FEATURES = ["season", "yr", "mnth", "hr", "holiday", "weekday", "workingday", "weathersit",
            "temp", "atemp", "hum", "windspeed"]


def load_hours(root):
    path = os.path.join(root, "build", "datasets", "hour.csv")
    opener = (lambda: open(path, newline="")) if os.path.exists(path) else \
        (lambda: lzma.open(os.path.join(root, "data", "bike-sharing", "hour.csv.xz"), "rt", newline=""))
    with opener() as f:
        rows = list(csv.DictReader(f))
    return rows


def between(rows, lo, hi):
    return [r for r in rows if lo <= r["dteday"] < hi]


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def infer_body(row):
    return {"id": f"hour-{row['instant']}",
            "inputs": [{"name": c, "datatype": "FP64", "shape": [1], "data": [float(row[c])]}
                       for c in FEATURES]}


def serve_hours(d, serve, rows):
    """Predicts every hour of rows (one request each, id hour-<instant>); returns
    {request id: (prediction, version)} and the number of failed requests."""
    out, failed = {}, 0
    for r in rows:
        st, body = serve.call("POST", f"/v2/models/{MODEL}/infer", infer_body(r))
        if st != 200:
            failed += 1
            continue
        out[body["id"]] = (body["outputs"][0]["data"][0], body["model_version"])
    return out, failed


def send_feedback(ing, rows, served):
    """Each hour's true count, as feedback for the request that predicted it."""
    recs = [{"model": MODEL, "request_id": f"hour-{r['instant']}", "value": float(r["cnt"])}
            for r in rows if f"hour-{r['instant']}" in served]
    for i in range(0, len(recs), 5000):
        st, body = ing.call("POST", "/v1/feedback", recs[i:i + 5000])
        if st != 201 or body.get("rejected"):
            raise SystemExit(f"demo: feedback refused: {st} {body}")
    return len(recs)


def rmse(pairs):
    return (sum((p - y) ** 2 for p, y in pairs) / len(pairs)) ** 0.5 if pairs else float("nan")


def quality_after(mon, version, n_before):
    """The quality reports of version (oldest first) once more than n_before of them closed."""
    st, body = mon.call("GET", f"/v1/monitors/{MODEL}/quality?history=50")
    if st != 200:
        return None
    reports = [q for q in body.get("reports", []) if str(q.get("version")) == str(version)]
    return list(reversed(reports)) if len(reports) > n_before else None


def live(q, metric):
    return q["metrics"][metric]["live"]


def ref(q, metric):
    return q["metrics"][metric]["reference"]


def drift_report(mon):
    st, body = mon.call("GET", f"/v1/monitors/{MODEL}/report?history=1")
    if st != 200:
        return None
    reports = body.get("reports") or ([body["report"]] if body.get("report") else [])
    return reports[0] if reports else None


def run(d):
    say, detail, wait, quern, Api = d.say, d.detail, d.wait, d.quern, d.Api
    story = {}
    rows = load_hours(d.ROOT)
    if d.ARGS.subset > 1:  # every Nth day, so that each kept day keeps its 24 hours
        days = sorted({r["dteday"] for r in rows})
        keep = set(days[::d.ARGS.subset])
        rows = [r for r in rows if r["dteday"] in keep]
    y2011 = between(rows, "2011-01-01", "2012-01-01")
    hours_2012 = between(rows, "2012-01-01", "2013-01-01")
    random.Random(7).shuffle(hours_2012)   # two halves, each spread over the whole year
    half = len(hours_2012) // 2
    hours_2, hours_3 = hours_2012[:half], hours_2012[half:]

    spec = json.load(open(os.path.join(d.ROOT, "examples", "train", "bike-hour-xgboost.json")))
    spec.pop("kind")
    retrain_spec = dict(spec, split={"kind": "time", "column": "dteday", "cutoff": V2_CUTOFF})
    rules = {"rules": [{
        "name": "bikes-quality", "severity": "critical", "cooldown": "30m", "dedupe": "{data.model}",
        "on": {"event": "quern.quality.reported", "where": {"data.model": MODEL},
               "when": {"value": "data.metrics.rmse.live", "op": ">", "than": "data.metrics.rmse.reference",
                        "times": MARGIN, "windows": 2}},
        "resolve": {"event": "quern.train.finished", "where": {"data.model": MODEL}},
        "actions": [{"type": "log"}, {"type": "retrain", "model": "{data.model}", "job": {
            "kind": "xgboost", "dataset": CLEAN, "spec": retrain_spec,
            "promote_policy": {"metric": "rmse", "margin": 0.0, "mode": "challenger"}}}]}]}
    os.makedirs(d.HOME, exist_ok=True)
    with open(os.path.join(d.HOME, "alert-rules.json"), "w") as f:
        json.dump(rules, f, indent=1)

    say(f"Starting every Quern service on embedded defaults (state in {d.HOME})")
    st = quern("up", "--detach")
    detail(", ".join(f"{s['service']}:{s['port']}" for s in st))
    reg, ing, serve, mon, alert = (Api(d.BASE + n) for n in (1, 2, 5, 7, 8))

    # 1. 2011 -> v1 --------------------------------------------------------------------
    say(f"1. Ingesting 2011: {len(y2011):,} hours of rentals, calendar and weather")
    f2011 = os.path.join(d.HOME, "hours-2011.csv")
    write_csv(f2011, y2011)
    got = quern("ingest", RAW, f2011)
    detail(f"{got['accepted']:,} rows accepted")
    pipe = os.path.join(d.ROOT, "examples", "pipelines", "bike-hours.json")
    quern("pipelines", "put", CLEAN, pipe)
    run1 = quern("pipelines", "run", CLEAN)
    detail(f"prep: dataset {CLEAN} v{run1['dataset_version']}, {run1['report']['rows_out']:,} rows")
    say("   Training XGBoost on 2011; held out: a random fifth of its hours")
    spec_file = os.path.join(d.HOME, "bikes-v1.json")
    json.dump(spec, open(spec_file, "w"))
    job = quern("train", MODEL, "--kind", "xgboost", "--dataset", CLEAN, "--spec", spec_file)
    r1 = job["result"]
    story["v1"] = {"version": r1["version"], "outcome": r1["outcome"], "rmse": r1["metrics"]["rmse"],
                   "r2": r1["metrics"]["r2"]}
    detail(f"version {r1['version']}: holdout RMSE {r1['metrics']['rmse']:.1f} rentals/hour, "
           f"R2 {r1['metrics']['r2']:.3f} -> {r1['outcome']}")

    # 2. 2012, served by v1 --------------------------------------------------------------
    wait("serve to load version 1", lambda: serve.call("GET", f"/v2/models/{MODEL}/ready")[0] == 200)
    say(f"2. 2012: serve predicts {len(hours_2):,} hours (half the year's, drawn at random), one request each")
    served2, failed2 = serve_hours(d, serve, hours_2)
    story["served_2"] = {"requests": len(hours_2), "failed": failed2}
    f2012 = os.path.join(d.HOME, "hours-2012-1.csv")
    write_csv(f2012, sorted(hours_2, key=lambda r: int(r["instant"])))
    quern("ingest", RAW, f2012)
    run2 = quern("pipelines", "run", CLEAN)
    detail(f"the hours' export lands in ingest: dataset {CLEAN} v{run2['dataset_version']}, "
           f"{run2['report']['rows_out']:,} rows")
    n_fb = send_feedback(ing, hours_2, served2)
    by_id = {f"hour-{r['instant']}": float(r["cnt"]) for r in hours_2}
    mine = rmse([(p, by_id[k]) for k, (p, _) in served2.items()])
    detail(f"{n_fb:,} true counts arrive as feedback (RMSE of those predictions, computed here: {mine:.1f})")
    q1s = wait("the monitor's quality reports on version 1", lambda: quality_after(mon, 1, 1))
    q1 = q1s[-1]
    story["quality_v1"] = [{"labelled": q["window"]["labelled"], "rmse": live(q, "rmse"),
                            "reference_rmse": ref(q, "rmse"), "mae": live(q, "mae"),
                            "mean_error": live(q, "mean_error"), "degraded": q["degraded"]} for q in q1s]
    for q in q1s:
        detail(f"monitor: window of {q['window']['labelled']:,} labelled predictions: live RMSE "
               f"{live(q, 'rmse'):.1f} vs holdout {ref(q, 'rmse'):.1f} ({live(q, 'rmse') / ref(q, 'rmse'):.1f}x), "
               f"MAE {live(q, 'mae'):.1f}, bias {live(q, 'mean_error'):+.1f} -> degraded {q['degraded']}")
    dr = wait("the drift report of the same traffic", lambda: drift_report(mon))
    story["drift_2"] = {"dataset_drift": dr["dataset_drift"], "share_drifted": dr["share_drifted"],
                        "features": d.features(dr)}
    moved = [f"{f['column']} {f['method']} {f['statistic']:.3f}" for f in dr["features"] if f.get("drifted")]
    detail(f"drift: dataset drift {dr['dataset_drift']} (share {dr['share_drifted']:.2f}); moved: "
           + (", ".join(moved) if moved else "none"))

    fired = wait("the quality alert", lambda: alerts(alert))
    story["alert"] = {"rule": fired["rule"], "actions": [a["type"] + ":" + a["status"] for a in fired["actions"]]}
    detail(f"alert {fired['rule']} fired ({fired['severity']}): " + ", ".join(story["alert"]["actions"]))

    # 3. the retrain ---------------------------------------------------------------------
    say(f"3. quern-train retrains on everything before {V2_CUTOFF}; champion/challenger on October-December 2012")
    job2 = wait("the retrain", lambda: finished_retrain(d), timeout=300)
    r2 = job2["result"]
    story["v2"] = {"version": r2["version"], "outcome": r2["outcome"], "metric": r2["metric"],
                   "challenger_score": r2["challenger_score"], "champion_score": r2.get("champion_score")}
    detail(f"version {r2['version']}: {r2['reason']} -> {r2['outcome']}")

    # 4. October-December, served by v2 ----------------------------------------------------
    if r2["outcome"] == "promoted":
        wait("serve to swap to version 2", lambda: serve.call("POST", f"/v2/models/{MODEL}/infer",
             infer_body(hours_3[0]))[1].get("model_version") == str(r2["version"]), timeout=60)
    say(f"4. The other {len(hours_3):,} hours of 2012, unseen by any model, served and fed back")
    served3, failed3 = serve_hours(d, serve, hours_3)
    story["served_3"] = {"requests": len(hours_3), "failed": failed3,
                         "versions": sorted({v for _, v in served3.values()})}
    send_feedback(ing, hours_3, served3)
    q2s = wait("the monitor's quality report on version 2", lambda: quality_after(mon, r2["version"], 0))
    q2 = q2s[-1]
    story["quality_v2"] = [{"labelled": q["window"]["labelled"], "rmse": live(q, "rmse"),
                            "reference_rmse": ref(q, "rmse"), "degraded": q["degraded"]} for q in q2s]
    for q in q2s:
        detail(f"monitor: window of {q['window']['labelled']:,} labelled predictions: live RMSE "
               f"{live(q, 'rmse'):.1f} vs holdout {ref(q, 'rmse'):.1f} ({live(q, 'rmse') / ref(q, 'rmse'):.2f}x), "
               f"bias {live(q, 'mean_error'):+.1f}")

    say("5. What happened")
    detail(f"v1 (2011): holdout RMSE {story['v1']['rmse']:.1f}; on 2012 live RMSE "
           f"{live(q1, 'rmse'):.1f} ({live(q1, 'rmse') / ref(q1, 'rmse'):.1f}x; the rule fires above {MARGIN}x "
           f"for 2 windows); its predictions were {-live(q1, 'mean_error'):.0f} rentals/hour too low on average")
    detail(f"data drift on the same traffic: {story['drift_2']['dataset_drift']} "
           f"(share of drifted features {story['drift_2']['share_drifted']:.2f})")
    if story["v2"]["champion_score"] is not None:
        detail(f"v2 on the fresh holdout: RMSE {story['v2']['challenger_score']:.1f} vs v1 "
               f"{story['v2']['champion_score']:.1f} -> {story['v2']['outcome']}")
    detail(f"live RMSE after the swap: {live(q2, 'rmse'):.1f} "
           f"({live(q2, 'rmse') / ref(q2, 'rmse'):.2f}x v2's holdout)")
    return story


def alerts(api):
    st, body = api.call("GET", "/v1/alerts?rule=bikes-quality")
    return body["alerts"][0] if st == 200 and body.get("alerts") else None


def finished_retrain(d):
    jobs = d.quern("jobs", "list")
    done = [j for j in jobs if j.get("model") == MODEL
            and j["state"] in ("succeeded", "failed", "cancelled")
            and (j.get("result") or {}).get("version") != 1]
    if done and done[0]["state"] != "succeeded":
        raise SystemExit(f"demo: the retrain {done[0]['state']}: {done[0].get('error')}")
    if not done:
        return None
    st, job = d.Api(d.BASE + 4).call("GET", f"/v1/jobs/{done[0]['id']}")
    return job
