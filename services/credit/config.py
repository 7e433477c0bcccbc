from pydantic_settings import SettingsConfigDict

from libs.runtime.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HARMON_CREDIT_", extra="ignore")
