"""Workers on other hosts: the web service and two Celery workers, each in its own folder with nothing
shared on disk, meet only in Redis, PostgreSQL and an S3 bucket. Audits uploaded through the API run on
both workers, which copy their inputs out of the bucket into their own scratch folders, store the results
in the bucket and leave their scratch folders empty; the reports download through the web service."""

import json
import re
from collections import Counter

import pytest

from auditsvc.stack import wait_for

pytestmark = pytest.mark.integration
STORED = re.compile(r"org-\d+/(modelversion|probeset|audit)/[0-9a-f]{32}/([\w.]+)")


@pytest.fixture(scope="module")
def split_stack(tmp_path_factory, postgres, s3_server):
    from tests.s3 import CREDENTIALS
    from auditsvc.stack import SplitStack

    stack = SplitStack(tmp_path_factory.mktemp("split"), postgres.create_database("split"), s3_server.endpoint,
                       s3_server.new_bucket(), CREDENTIALS)
    try:
        yield stack.start()
    finally:
        stack.stop()


def test_audits_run_on_two_workers_that_share_only_redis_postgresql_and_a_bucket(split_stack, s3_server,
                                                                                  audit_inputs):
    stack = split_stack
    created = [stack.create_audit(*audit_inputs, profile="quick", seed=str(seed)) for seed in (1, 2)]
    done = [stack.wait_until(audit["id"], lambda s: s["status"] in ("done", "failed"), 180) for audit in created]
    assert [audit["status"] for audit in done] == ["done", "done"], [audit["message"] for audit in done]

    ran = {worker: wait_for(lambda: _audits_run(stack.log(worker)), 30, f"{worker} to finish")
           for worker in ("worker1", "worker2")}
    assert sorted(ran["worker1"] + ran["worker2"]) == sorted(audit["id"] for audit in created)   # one each

    bucket = stack.env["AUDITSVC_S3_BUCKET"]
    keys = s3_server.keys(bucket)
    assert Counter(STORED.fullmatch(key).groups() for key in keys) == {
        ("modelversion", "model.pt2"): 1, ("probeset", "probe.zip"): 2,   # the same model both times
        ("audit", "report.html"): 2, ("audit", "report.pdf"): 2, ("audit", "findings.json"): 2}
    api = stack.api()
    pdfs = {api.get(audit["links"]["report_pdf"], timeout=30).content for audit in done}
    assert pdfs == {s3_server.read(bucket, key) for key in keys if key.endswith("/report.pdf")}
    for audit in done:
        findings = json.loads(api.get(audit["links"]["findings"], timeout=30).content)
        assert findings["verdict"] == audit["verdict"] and findings["model"]["name"] == "integration-model"

    for name in ("web", "worker1", "worker2"):   # no media folder anywhere; the scratch folders emptied
        assert [p.relative_to(stack.home(name)).as_posix() for p in stack.home(name).rglob("*")] == ["scratch"]


def _audits_run(log: str) -> list[int]:
    return [int(found) for found in re.findall(r"execute_audit\[audit-(\d+)\] succeeded", log)]
