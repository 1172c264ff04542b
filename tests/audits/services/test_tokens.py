"""API tokens: stored hashed, acting for their own organization while their user is a member."""

import pytest
from django.core.exceptions import ValidationError

from auditsvc.audits import services
from auditsvc.audits.models import ApiToken, Membership

pytestmark = pytest.mark.django_db


def test_api_tokens_are_stored_hashed(users):
    token, key = services.api_token_create(user=users["alice"], organization=users["acme"], name="ci")
    assert key.startswith("asv_") and key not in token.key_hash and token.key_hash != key
    assert services.api_token_authenticate(key) == token
    assert services.api_token_authenticate(key + "x") is None
    services.api_token_revoke(token)
    assert services.api_token_authenticate(key) is None
    with pytest.raises(ValidationError):
        services.api_token_create(user=users["alice"], organization=users["globex"], name="not mine")
    assert ApiToken.objects.filter(key_hash=key).count() == 0


def test_a_token_stops_working_when_its_user_leaves_the_organization(users):
    token, key = services.api_token_create(user=users["alice"], organization=users["acme"], name="ci")
    assert services.api_token_authenticate(key).organization == users["acme"]
    Membership.objects.filter(user=users["alice"], organization=users["acme"]).delete()
    assert services.api_token_authenticate(key) is None


def test_a_revoked_token_keeps_the_date_it_was_first_revoked(users):
    token, key = services.api_token_create(user=users["alice"], organization=users["acme"], name="ci")
    assert token.revoked_at is None
    revoked = services.api_token_revoke(token)
    first = revoked.revoked_at
    assert revoked.revoked and first is not None
    assert services.api_token_revoke(token).revoked_at == first
    assert ApiToken.objects.filter(pk=token.pk).exists() and services.api_token_authenticate(key) is None
