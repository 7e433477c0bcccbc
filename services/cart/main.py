"""`python -m services.cart`"""

from pathlib import Path

from libs.runtime.service import ServiceSpec, run

from . import entrypoint
from .config import Settings
from .unit_of_work import CartUnitOfWork

MIGRATIONS = Path(__file__).parent / "migrations"


def spec() -> ServiceSpec:
    return ServiceSpec(name="cart", settings=Settings(), migrations_dir=MIGRATIONS, register=entrypoint.register,
                       unit_of_work=CartUnitOfWork)


def main() -> None:
    run(spec)
