"""`python -m services.pricing`"""

from pathlib import Path

from libs.runtime.service import ServiceSpec, run

from . import entrypoint
from .config import Settings
from .tables import metadata, runtime

MIGRATIONS = Path(__file__).parent / "migrations"


def spec() -> ServiceSpec:
    return ServiceSpec(name="pricing", settings=Settings(), metadata=metadata, tables=runtime,
                       migrations_dir=MIGRATIONS, register=entrypoint.register)


def main() -> None:
    run(spec)
