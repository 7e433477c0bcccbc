from libs.runtime.migrations import run_env
from services.pricing.tables import metadata

run_env(metadata)
