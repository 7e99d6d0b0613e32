"""Adult end to end through the services: the raw census rows go into
quern-ingest (as CSV), quern-prep cleans them with the shipped example
pipeline, quern-train fits XGBoost and logistic models on the snapshot, and
quern-serve answers with the production version: its predictions on raw rows
(categories as text, numbers as they are) are those of the registered model.
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from adult_common import AdultServices, infer_inputs, wait_for  # noqa: E402


class AdultEndToEnd(AdultServices):
    def test_adult_ingest_prep_train_serve(self):
        self.start_adult_services("quern-adult-")
        accepted, run = self.clean_adult()
        self.assertEqual(accepted, 32561)
        self.assertEqual(run["report"]["rows_out"], 30162)  # the complete rows of adult.data

        results = {}
        for kind in ("xgboost", "logistic"):
            j = self.train_adult(kind, promote="always" if kind == "xgboost" else "never")
            results[kind] = j["result"]
        xgb_auc = results["xgboost"]["metrics"]["roc_auc"]
        lr_auc = results["logistic"]["metrics"]["roc_auc"]
        print(f"adult through the services: XGBoost ROC AUC {xgb_auc:.4f}, logistic {lr_auc:.4f}")
        self.assertGreater(xgb_auc, 0.90)
        self.assertGreater(lr_auc, 0.88)
        self.assertEqual(results["xgboost"]["outcome"], "promoted")
        self.assertEqual(results["logistic"]["outcome"], "registered")
        st, _, v = self.reg.request("GET", "/v1/models/adult/versions/1")
        self.assertEqual(v["dataset"]["name"], "adult-clean")
        self.assertEqual(v["aliases"], ["production"])

        serve = self.start("serve", env=self.env, args=["--registry", self.regurl, "--models", "adult",
                                                        "--grpc-listen", "off"])
        wait_for(lambda: serve.request("GET", "/v2/health/ready")[0] == 200, timeout=60, every=0.1)
        row = {"age": 52, "workclass": "Self-emp-inc", "fnlwgt": 287927, "education": "HS-grad",
               "education-num": 9, "marital-status": "Married-civ-spouse", "occupation": "Exec-managerial",
               "relationship": "Wife", "race": "White", "sex": "Female", "capital-gain": 15024,
               "capital-loss": 0, "hours-per-week": 40, "native-country": "United-States"}
        st, _, ans = serve.request("POST", "/v2/models/adult/infer", {"inputs": infer_inputs(row)})
        self.assertEqual(st, 200, ans)
        self.assertEqual(ans["model_version"], "1")
        p = ans["outputs"][0]["data"][0]
        self.assertGreater(p, 0.5, "a married executive with a 15,024 capital gain earns >50K in this data")


if __name__ == "__main__":
    unittest.main(verbosity=2)
