"""`python -m services.orders`"""

from datetime import timedelta
from pathlib import Path

from libs.runtime.service import ServiceSpec, run

from . import entrypoint
from .config import Settings
from .domain import CheckoutSaga
from .unit_of_work import OrdersUnitOfWork

MIGRATIONS = Path(__file__).parent / "migrations"


def spec() -> ServiceSpec:
    settings = Settings()
    saga = CheckoutSaga(step_timeout=timedelta(seconds=settings.step_timeout_s))
    return ServiceSpec(name="orders", settings=settings, migrations_dir=MIGRATIONS, register=entrypoint.register,
                       unit_of_work=OrdersUnitOfWork.with_saga(saga), background=[entrypoint.watch_deadlines])


def main() -> None:
    run(spec)
