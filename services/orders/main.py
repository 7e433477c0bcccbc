"""`python -m services.orders`"""

from pathlib import Path

from libs.runtime.service import ServiceSpec, run

from . import entrypoint
from .config import Settings
from .unit_of_work import OrdersUnitOfWork

MIGRATIONS = Path(__file__).parent / "migrations"


def spec() -> ServiceSpec:
    return ServiceSpec(name="orders", settings=Settings(), migrations_dir=MIGRATIONS, register=entrypoint.register,
                       unit_of_work=OrdersUnitOfWork, background=[entrypoint.watch_deadlines, entrypoint.watch_invoices])


def main() -> None:
    run(spec)
