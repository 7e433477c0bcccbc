from libs.runtime.migrations import run_env
from services.cart.tables import metadata

run_env(metadata)
