from libs.runtime.migrations import run_env
from services.credit.tables import metadata

run_env(metadata)
