from libs.runtime.migrations import run_env
from services.gateway.tables import metadata

run_env(metadata)
