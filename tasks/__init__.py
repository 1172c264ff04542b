"""Celery tasks: take ids, call a service, return."""
