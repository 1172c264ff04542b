"""The live view of an audit: its place in the queue, the time left estimated from past audits of a
similar size (none without history), its steps with their durations."""

from datetime import timedelta

import pytest
from django.utils import timezone

from auditsvc.audits import selectors
from auditsvc.audits.models import Audit, ProbeSet

pytestmark = pytest.mark.django_db


def step(name, status="queued", seconds=None, fraction=0.0, started=None):
    return {"name": name, "title": name.title(), "status": status, "started": started, "seconds": seconds,
            "fraction": fraction}


@pytest.fixture
def make_audit(users, stored):
    version, _ = stored

    def make(images=100, status=Audit.Status.QUEUED, steps=(), organization="acme", **fields):
        probe = ProbeSet.objects.create(organization=users[organization], name=f"{images} images", file="x.zip",
                                        sha256="0" * 64, images=images, classes=["cat", "dog"])
        model_version = version if organization == "acme" else _version_of(users["globex"], version)
        return Audit.objects.create(organization=users[organization], model_version=model_version, probe_set=probe,
                                    status=status, steps=list(steps), **fields)
    return make


def _version_of(organization, like):
    return type(like).objects.create(organization=organization, name=like.name, version=like.version, meta=like.meta,
                                     format=like.format, file=like.file.name, sha256=like.sha256)


# --- the queue ---------------------------------------------------------------------------------

def test_the_queue_position_counts_the_queued_audits_before_it_of_every_organization(make_audit):
    first = make_audit()
    make_audit(status=Audit.Status.RUNNING)            # running: no longer waiting ahead of anyone
    make_audit(organization="globex")                  # another organization's: the same workers
    make_audit(status=Audit.Status.DONE)
    last = make_audit()
    assert selectors.audit_queue_position(first) == 0
    assert selectors.audit_queue_position(last) == 2
    first.status = Audit.Status.RUNNING
    first.save()
    assert selectors.audit_queue_position(last) == 1 and selectors.audit_queue_position(first) is None


def test_audits_created_at_the_same_moment_queue_by_id(make_audit):
    now = timezone.now()
    earlier, later = make_audit(), make_audit()
    Audit.objects.filter(pk__in=[earlier.pk, later.pk]).update(created=now)
    earlier.refresh_from_db()
    later.refresh_from_db()
    assert (selectors.audit_queue_position(earlier), selectors.audit_queue_position(later)) == (0, 1)


# --- the estimate ------------------------------------------------------------------------------

def test_there_is_no_estimate_without_history(make_audit):
    audit = make_audit(steps=[step("summary"), step("report")])
    make_audit(status=Audit.Status.FAILED, steps=[step("summary", "ok", 3.0), step("report", "ok", 1.0)])
    assert selectors.audit_remaining_seconds(audit) is None   # only finished (done) audits teach
    assert selectors.audit_progress(audit)["remaining"] is None


def test_the_estimate_scales_past_durations_by_the_probe_set_size(make_audit):
    make_audit(images=100, status=Audit.Status.DONE, steps=[step("summary", "ok", 1.0),
                                                             step("performance", "ok", 10.0),
                                                             step("report", "ok", 2.0)])
    running = make_audit(images=300, status=Audit.Status.RUNNING, steps=[
        step("summary", "ok", 3.0), step("performance", "running", fraction=0.25), step("report")])
    # performance: 10 s x 3 with a quarter done; the report 2 s x 3; the finished summary counts no more
    assert selectors.audit_remaining_seconds(running) == pytest.approx(30 * 0.75 + 6)
    unknown = make_audit(images=300, status=Audit.Status.RUNNING, steps=[step("performance"), step("saliency")])
    assert selectors.audit_remaining_seconds(unknown) is None   # a step nobody has timed yet


def test_the_estimate_learns_from_the_audits_nearest_in_size(make_audit):
    for _ in range(3):   # 1 s per image on 1000 images
        make_audit(images=1000, status=Audit.Status.DONE, steps=[step("shortcuts", "ok", 1000.0)])
    for _ in range(5):   # 0.1 s per image on 100 images
        make_audit(images=100, status=Audit.Status.DONE, steps=[step("shortcuts", "ok", 10.0)])
    make_audit(images=1000, status=Audit.Status.DONE, steps=[step("shortcuts", "error", 1.0)])   # not a duration
    big = make_audit(images=900, steps=[step("shortcuts")])
    small = make_audit(images=110, steps=[step("shortcuts")])
    # the five nearest: three of 1000 images and two of 100 for the big one, the five of 100 for the small one
    assert selectors.audit_remaining_seconds(big) == pytest.approx(900.0)
    assert selectors.audit_remaining_seconds(small) == pytest.approx(11.0)


# --- the live view -----------------------------------------------------------------------------

def test_the_progress_of_a_running_audit_names_its_step_and_times(make_audit):
    now = timezone.now()
    audit = make_audit(status=Audit.Status.RUNNING, started=now - timedelta(seconds=134), steps=[
        step("summary", "ok", 0.4), step("shortcuts", "running", fraction=0.5,
                                         started=(now - timedelta(seconds=20)).isoformat()),
        step("report")])
    progress = selectors.audit_progress(audit, now)
    assert progress["step"] == {"number": 2, "count": 3, "title": "Shortcuts"}
    assert [(s["status"], s["seconds"]) for s in progress["steps"]] == [("ok", 0.4), ("running", 20.0),
                                                                         ("queued", None)]
    assert progress["elapsed"] == 134.0 and progress["queue_position"] is None and progress["cancellable"]


def test_a_finished_audit_has_no_estimate_and_cannot_be_cancelled(make_audit):
    now = timezone.now()
    audit = make_audit(status=Audit.Status.CANCELLED, started=now - timedelta(seconds=10), finished=now,
                       steps=[step("summary", "ok", 0.4), step("report", "cancelled")])
    progress = selectors.audit_progress(audit, now + timedelta(hours=1))
    assert progress["elapsed"] == 10.0 and progress["remaining"] is None and progress["step"] is None
    assert not progress["cancellable"]
