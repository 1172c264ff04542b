from django.apps import AppConfig


class AuditsConfig(AppConfig):
    name = "auditsvc.audits"
    label = "audits"
    verbose_name = "Audits"

    def ready(self) -> None:
        from . import receivers  # noqa: F401  (connects them)
