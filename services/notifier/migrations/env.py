from libs.runtime.migrations import run_env
from services.notifier.tables import metadata

run_env(metadata)
