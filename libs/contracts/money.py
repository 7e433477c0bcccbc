"""Money is integer minor units (cents) beside an ISO currency; GCT arithmetic lives here so every service rounds alike."""

from enum import StrEnum

DEFAULT_CURRENCY = "JMD"
BASIS_POINTS = 10_000


class TaxCategory(StrEnum):
    STANDARD = "standard"
    ZERO_RATED = "zero_rated"
    EXEMPT = "exempt"


# Jamaican GCT in basis points; tenants may override (pricing settings).
DEFAULT_GCT_RATES_BP: dict[TaxCategory, int] = {
    TaxCategory.STANDARD: 1500,
    TaxCategory.ZERO_RATED: 0,
    TaxCategory.EXEMPT: 0,
}


def tax_half_up(amount_minor: int, rate_bp: int) -> int:
    """Tax on a non-negative amount at `rate_bp` basis points, rounded half-up to the minor unit."""
    if amount_minor < 0 or rate_bp < 0:
        raise ValueError("tax_half_up takes non-negative amounts and rates")
    return (amount_minor * rate_bp + BASIS_POINTS // 2) // BASIS_POINTS
