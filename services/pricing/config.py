from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from libs.contracts.money import DEFAULT_GCT_RATES_BP, TaxCategory
from libs.runtime.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HARMON_PRICING_", extra="ignore")

    # GCT in basis points by tax category; one set per deployment until tenants can override it.
    gct_rates_bp: dict[str, int] = Field(
        default_factory=lambda: {str(k): v for k, v in DEFAULT_GCT_RATES_BP.items()},
        description='e.g. HARMON_PRICING_GCT_RATES_BP=\'{"standard": 1500}\'; categories not named keep the default',
    )

    @field_validator("gct_rates_bp")
    @classmethod
    def _rates(cls, v: dict[str, int]) -> dict[str, int]:
        known = {c.value for c in TaxCategory}
        unknown = set(v) - known
        if unknown:
            raise ValueError(f"unknown tax categories {sorted(unknown)}; known: {sorted(known)}")
        if any(rate < 0 or rate > 10_000 for rate in v.values()):
            raise ValueError("GCT rates are basis points between 0 and 10000")
        if v.get(TaxCategory.EXEMPT, 0) != 0:
            raise ValueError("exempt supplies carry no GCT; the exempt rate must be 0")
        return {**{str(k): r for k, r in DEFAULT_GCT_RATES_BP.items()}, **v}
