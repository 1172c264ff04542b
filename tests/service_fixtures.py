"""Fixtures for the service: a throwaway PostgreSQL server for the test database, organizations and
members, uploads made from tiny models, private media (a folder, or a bucket of an S3 server), the tasks
sent to a broker."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile

from auditsvc.audits import services
from auditsvc.celery import app as celery_app
from auditsvc.demo.nets import PlainNet
from tests.conftest import write_package, write_probe

CLASSES = ["cat", "dog"]


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server for the session (auditsvc/stack/postgres.py); started by the first test that needs it."""
    from auditsvc.stack import PostgresServer

    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, postgres):
    """pytest-django's test database (test_auditsvc) goes on the PostgreSQL server, configured from a
    DATABASE_URL as production is."""
    from django.conf import settings
    from django.db import connections

    from auditsvc.settings import database_from_url

    connections.close_all()
    settings.DATABASES["default"] = database_from_url(postgres.url("auditsvc"))
    connections.__dict__.pop("settings", None)   # the handler caches the settings it first read
    for alias in list(connections):
        try:
            del connections[alias]   # a connection opened on the old settings
        except AttributeError:
            pass


@pytest.fixture(autouse=True)
def private_media(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": tmp_path / "media", "base_url": None}}}
    return tmp_path / "media"


@pytest.fixture(scope="session")
def s3_server():
    """One S3-compatible server for the session (tests/s3.py); each test that uses it has a bucket of its own."""
    from tests.s3 import S3Server

    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_media(private_media, s3_server, settings, monkeypatch):
    """Stored files in a new bucket of the S3 server, configured as production's AUDITSVC_S3_* settings make it;
    returns the bucket's name."""
    from auditsvc.settings import s3_storage
    from tests.s3 import CREDENTIALS

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.new_bucket()
    settings.STORAGES = {**settings.STORAGES, "default": s3_storage(bucket, s3_server.endpoint)}
    return bucket


@pytest.fixture
def users(django_user_model):
    alice = django_user_model.objects.create_user("alice", "alice@example.com", "alice-password-1")
    bob = django_user_model.objects.create_user("bob", "bob@example.com", "bob-password-1")
    acme = services.organization_create(name="Acme", owner=alice)
    globex = services.organization_create(name="Globex", owner=bob)
    return {"alice": alice, "bob": bob, "acme": acme, "globex": globex}


@pytest.fixture(scope="session")
def package_files(tmp_path_factory) -> dict[str, bytes]:
    torch.manual_seed(0)
    path = write_package(tmp_path_factory.mktemp("pkg"), PlainNet(2, widths=(4, 8)), CLASSES, name="pets")
    return {"model": path.read_bytes(), "meta": path.with_name("model.json").read_bytes()}


@pytest.fixture(scope="session")
def probe_bytes(tmp_path_factory) -> bytes:
    root = write_probe(tmp_path_factory.mktemp("probe") / "probe", CLASSES, per_class=6)
    return zip_directory(root)


def zip_directory(root: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(root.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(root).as_posix())
    return buffer.getvalue()


def uploads(package_files, probe_bytes=None):
    files = {"model": SimpleUploadedFile("model.pt2", package_files["model"]),
             "meta": SimpleUploadedFile("model.json", package_files["meta"])}
    if probe_bytes is not None:
        files["dataset"] = SimpleUploadedFile("probe.zip", probe_bytes)
    return files


@pytest.fixture
def stored(users, package_files, probe_bytes):
    """A model version and a probe set in Acme."""
    files = uploads(package_files, probe_bytes)
    version = services.model_version_create(organization=users["acme"], user=users["alice"], file=files["model"],
                                            meta=files["meta"])
    probe = services.probe_set_create(organization=users["acme"], user=users["alice"], name="pets probe",
                                      file=files["dataset"])
    return version, probe


@pytest.fixture
def sent_tasks(settings, monkeypatch):
    """A broker is configured; the tasks sent to it are recorded instead."""
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    sent = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, args=None, **options: sent.append((name, args)))
    return sent


@pytest.fixture(scope="session")
def gate_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny models whose quick audit is PASS and WARN, and their probe set as a zip (tests/release_gate.py)."""
    from tests.release_gate import write_gate_models

    built = write_gate_models(tmp_path_factory.mktemp("gate"))
    archive = built["probe"].with_name("probe.zip")
    archive.write_bytes(zip_directory(built["probe"]))
    return built | {"probe": archive}
