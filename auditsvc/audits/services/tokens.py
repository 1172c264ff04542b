"""API tokens: a pipeline's credential for one organization. Only a hash of the key is stored."""

from __future__ import annotations

import hashlib
import secrets

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from ..models import ApiToken, Membership, Organization
from .columns import check_text


def api_token_create(*, user, organization: Organization, name: str) -> tuple[ApiToken, str]:
    """Returns the token and its key; the key is not stored and cannot be shown again."""
    if not Membership.objects.filter(user=user, organization=organization).exists():
        raise ValidationError("A token can only be made for an organization the user belongs to.")
    check_text(ApiToken, name=name)
    key = "asv_" + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, organization=organization, name=name, prefix=key[:12],
                                    key_hash=_hash_key(key))
    return token, key


def api_token_authenticate(key: str) -> ApiToken | None:
    """The token acts for its own organization only, and only while its user is a member of it."""
    token = ApiToken.objects.select_related("user", "organization").filter(
        key_hash=_hash_key(key), revoked=False, user__is_active=True,
        user__memberships__organization=models.F("organization")).first()
    if token is not None:
        ApiToken.objects.filter(pk=token.pk).update(last_used=timezone.now())
    return token


def api_token_revoke(token: ApiToken) -> ApiToken:
    """The token stops working at once; the first revocation's date is kept."""
    ApiToken.objects.filter(pk=token.pk, revoked=False).update(revoked=True, revoked_at=timezone.now())
    token.refresh_from_db(fields=["revoked", "revoked_at"])
    return token


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
