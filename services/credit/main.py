"""`python -m services.credit`"""

from pathlib import Path

from libs.runtime.service import ServiceSpec, run

from . import entrypoint
from .config import Settings
from .unit_of_work import CreditUnitOfWork

MIGRATIONS = Path(__file__).parent / "migrations"


def spec() -> ServiceSpec:
    return ServiceSpec(name="credit", settings=Settings(), migrations_dir=MIGRATIONS, register=entrypoint.register,
                       unit_of_work=CreditUnitOfWork)


def main() -> None:
    run(spec)
