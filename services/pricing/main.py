"""`python -m services.pricing`"""

from pathlib import Path

from libs.runtime.service import ServiceSpec, run

from . import entrypoint
from .config import Settings
from .unit_of_work import PricingUnitOfWork

MIGRATIONS = Path(__file__).parent / "migrations"


def spec() -> ServiceSpec:
    return ServiceSpec(name="pricing", settings=Settings(), migrations_dir=MIGRATIONS, register=entrypoint.register,
                       unit_of_work=PricingUnitOfWork)


def main() -> None:
    run(spec)
