"""`python -m services.notifier`"""

from pathlib import Path

from libs.runtime.service import ServiceSpec, run

from . import entrypoint, worker
from .config import Settings
from .unit_of_work import NotifierUnitOfWork

MIGRATIONS = Path(__file__).parent / "migrations"


def spec() -> ServiceSpec:
    return ServiceSpec(name="notifier", settings=Settings(), migrations_dir=MIGRATIONS, register=entrypoint.register,
                       unit_of_work=NotifierUnitOfWork, background=[worker.background])


def main() -> None:
    run(spec)
