"""Notifier rules, free of I/O: what an internal event is called on the public API."""

PUBLIC_NAMES = {"OrderConfirmed": "order.confirmed"}


def public_event_type(message_type: str) -> str | None:
    """`order.confirmed` for OrderConfirmed; None for events subscribers are not shown."""
    return PUBLIC_NAMES.get(message_type)
