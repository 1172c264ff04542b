"""Create an organization, a user who owns it and (optionally) an API token: a first login for `make serve`."""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from auditsvc.audits import services
from auditsvc.audits.models import Membership, Organization


class Command(BaseCommand):
    help = "Create (or reuse) an organization and its owner; print an API token with --token."

    def add_arguments(self, parser):
        parser.add_argument("--organization", required=True)
        parser.add_argument("--username", required=True)
        parser.add_argument("--password", required=True)
        parser.add_argument("--email", default="")
        parser.add_argument("--staff", action="store_true", help="also let the user into the admin")
        parser.add_argument("--token", action="store_true", help="print a new API token for the user")

    def handle(self, *args, **options):
        try:
            self._bootstrap(options)
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None

    @transaction.atomic
    def _bootstrap(self, options):
        users = get_user_model()
        user, created = users.objects.get_or_create(username=options["username"],
                                                    defaults={"email": options["email"]})
        if created or options["password"]:
            user.set_password(options["password"])
        user.is_staff = user.is_superuser = options["staff"] or user.is_staff
        user.save()
        organization = Organization.objects.filter(name=options["organization"]).first()
        if organization is None:
            organization = services.organization_create(name=options["organization"], owner=user)
        else:
            Membership.objects.get_or_create(user=user, organization=organization,
                                             defaults={"role": Membership.Role.OWNER})
        self.stderr.write(f"{user.username} owns {organization.name}")
        if options["token"]:
            _, key = services.api_token_create(user=user, organization=organization, name="bootstrap")
            self.stdout.write(key)
