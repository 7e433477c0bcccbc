"""The error catalogue's codes: every refusal a service answers with, and what the gateway maps to HTTP."""

from enum import StrEnum


class ErrorCode(StrEnum):
    RESOURCE_MISSING = "resource_missing"
    CART_FROZEN = "cart_frozen"
    CART_CHECKED_OUT = "cart_checked_out"
    CART_VERSION_CONFLICT = "cart_version_conflict"
    SKU_UNKNOWN = "sku_unknown"
    UOM_UNKNOWN = "uom_unknown"
    QUANTITY_INVALID = "quantity_invalid"
    AMOUNT_TOO_LARGE = "amount_too_large"
    PARAMETER_INVALID = "parameter_invalid"
    PARAMETER_MISSING = "parameter_missing"
    PARAMETER_UNKNOWN = "parameter_unknown"
    RESERVATION_RELEASED = "reservation_released"
    ORDER_NOT_CANCELLABLE = "order_not_cancellable"
    # why an ERP lifecycle record was dead-lettered (the `harmon-dlt-code` header)
    RECORD_CONFLICT = "record_conflict"
    OVER_FULFILMENT = "over_fulfilment"
    LINE_UNKNOWN = "line_unknown"
    NOT_FULFILLED = "not_fulfilled"
    ORDER_CANCELLED = "order_cancelled"
    CURRENCY_MISMATCH = "currency_mismatch"
    INVOICE_UNKNOWN = "invoice_unknown"
    URL_INVALID = "url_invalid"  # a webhook endpoint's URL it may not use (not https in live mode, not public)
    UPSTREAM_TIMEOUT = "upstream_timeout"
    INTERNAL_ERROR = "internal_error"
