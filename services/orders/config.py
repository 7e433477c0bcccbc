from pydantic import Field
from pydantic_settings import SettingsConfigDict

from libs.runtime.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HARMON_ORDERS_", extra="ignore")

    step_timeout_s: float = Field(5.0, gt=0, description="deadline of each saga step")
    sweep_interval_s: float = Field(0.25, gt=0, description="how often overdue sagas are looked for")
    overdue_sweep_interval_s: float = Field(60.0, gt=0, description="how often open invoices past due are looked for")
