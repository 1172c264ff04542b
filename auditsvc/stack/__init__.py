"""The service as real processes on this machine, for the integration tests (tests/conftest.py) and the
soak benchmark (bench/soak.py): a throwaway PostgreSQL server (postgres.py); redis-server, the web
server, Celery workers and beat on loopback (stack.py). Nothing in the service imports this."""

from .postgres import PostgresServer
from .stack import SplitStack, Stack, free_port, wait_for

__all__ = ["PostgresServer", "SplitStack", "Stack", "free_port", "wait_for"]
