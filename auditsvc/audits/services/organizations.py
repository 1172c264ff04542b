"""Organizations and their first owner."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from ..models import Membership, Organization
from .columns import check_text


def organization_create(*, name: str, owner) -> Organization:
    check_text(Organization, name=name)
    if not name.strip():
        raise ValidationError({"name": "The organization needs a name."})
    if Organization.objects.filter(name=name).exists():
        raise ValidationError({"name": f"An organization named {name!r} already exists."})
    with transaction.atomic():
        organization = Organization.objects.create(name=name)
        Membership.objects.create(user=owner, organization=organization, role=Membership.Role.OWNER)
    return organization
