from django.apps import AppConfig


class AuditsConfig(AppConfig):
    name = "auditsvc.audits"
    label = "audits"
    verbose_name = "Audits"
