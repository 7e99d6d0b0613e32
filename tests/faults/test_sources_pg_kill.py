"""test_sources_pg_kill.py - kill -9 of quern-ingest in the middle of a pull
from PostgreSQL (the private server of tests/unit/core/run_store_pg.sh,
which also holds ingest's own store), twice, then a restart and a run to the
end: every row exactly once, seqs gapless."""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faults import ServiceTest  # noqa: E402
from sources_kill import kill_mid_pull  # noqa: E402

PG = os.environ.get("QUERN_TEST_PG")


@unittest.skipUnless(PG, "needs QUERN_TEST_PG (run through tests/unit/core/run_store_pg.sh)")
class PgKill(ServiceTest):
    def test_postgres(self):
        total = 300000
        subprocess.run(["psql", PG, "-v", "ON_ERROR_STOP=1", "-q", "-c",
                        "DROP TABLE IF EXISTS kill_src; CREATE TABLE kill_src AS SELECT i AS id, 'v' || i AS v, "
                        f"i * 0.5 AS x FROM generate_series(1, {total}) AS i"], check=True, timeout=300)
        ing = self.start("ingest")
        kill_mid_pull(self, ing, "p", {"kind": "postgres", "dataset": "d", "url": PG,
                                       "query": "SELECT * FROM kill_src", "cursor": "id", "batch": 1000}, total)


if __name__ == "__main__":
    unittest.main()
