"""Stored files follow their rows: a model version, probe set or audit deleted (on its own, or with its
organization or model version) takes its files in storage with it, once the deletion commits. A signal,
because cascades delete rows that no service sees."""

from django.db.models.signals import post_delete
from django.dispatch import receiver

from .models import Audit, ModelVersion, ProbeSet


@receiver(post_delete, sender=ModelVersion, dispatch_uid="audits-model-version-files")
@receiver(post_delete, sender=ProbeSet, dispatch_uid="audits-probe-set-files")
@receiver(post_delete, sender=Audit, dispatch_uid="audits-audit-files")
def delete_stored_files(sender, instance, **kwargs) -> None:
    from .services.files import delete_files_on_commit   # here, not at start-up: the services import torch

    delete_files_on_commit(instance)
