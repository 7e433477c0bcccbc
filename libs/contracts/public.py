"""The API's public objects (Stripe-like: `id`, `object`, `livemode`), built from the services' views.

Shared vocabulary: the gateway answers with them, and notifier puts the same object in an event's
`data.object` and in the webhook body (docs/api.md), so an event shows an order exactly as the API does.
"""

from datetime import UTC, datetime
from typing import Any

from libs.contracts.cart import CartLine, CartView
from libs.contracts.credit import CreditAccountView
from libs.contracts.invoices import InvoiceLine, InvoiceView
from libs.contracts.orders import FulfilmentView, OpenInvoice, OrderLine, OrderView
from libs.contracts.pricing import LinesPriced, ProductView
from libs.contracts.webhooks import EventView, WebhookDeliveryView, WebhookEndpointView


def timestamp(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def maybe_timestamp(dt: datetime | None) -> str | None:
    return None if dt is None else timestamp(dt)


def cart_line(line: CartLine) -> dict[str, Any]:
    return {
        "id": line.line_id, "object": "cart_line", "sku": line.sku, "order_uom": line.order_uom,
        "order_quantity": line.order_quantity, "factor": line.factor, "base_uom": line.base_uom,
        "quantity": line.base_quantity,
    }


def cart(view: CartView, livemode: bool) -> dict[str, Any]:
    return {
        "id": view.cart_id, "object": "cart", "livemode": livemode, "customer_id": view.customer_id,
        "status": view.status, "version": view.version, "order_id": view.order_id,
        "lines": [cart_line(x) for x in view.lines],
        "created_at": timestamp(view.created_at), "updated_at": timestamp(view.updated_at),
    }


def priced_cart(view: CartView, priced: LinesPriced, livemode: bool) -> dict[str, Any]:
    entered = {x.line_id: x for x in view.lines}
    lines = []
    for p in priced.lines:
        line = entered.get(p.line_id)
        lines.append({
            "line_id": p.line_id, "sku": p.sku, "quantity": p.base_quantity,
            "base_uom": line.base_uom if line else None,
            "order_uom": line.order_uom if line else None,
            "order_quantity": line.order_quantity if line else None,
            "unit_price": p.unit_price, "price_source": p.price_source, "subtotal": p.subtotal,
            "tax_category": str(p.tax_category), "tax_rate_bp": p.tax_rate_bp, "tax": p.tax, "total": p.total,
        })
    return {
        "object": "priced_cart", "livemode": livemode, "cart_id": view.cart_id, "cart_version": view.version,
        "currency": priced.currency, "subtotal": priced.subtotal, "tax": priced.tax, "total": priced.total,
        "lines": lines,
    }


def product(view: ProductView, livemode: bool) -> dict[str, Any]:
    return {
        "id": view.sku, "object": "product", "livemode": livemode, "sku": view.sku, "name": view.name,
        "base_uom": view.base_uom, "units": dict(view.units), "tax_category": str(view.tax_category),
        "unit_price": view.unit_price, "currency": view.currency, "price_source": view.price_source,
    }


def order_line(line: OrderLine) -> dict[str, Any]:
    return {
        "id": line.line_id, "object": "order_line", "sku": line.sku, "order_uom": line.order_uom,
        "order_quantity": line.order_quantity, "factor": line.factor, "base_uom": line.base_uom,
        "quantity": line.base_quantity, "unit_price": line.unit_price, "price_source": line.price_source,
        "subtotal": line.subtotal, "tax_category": str(line.tax_category), "tax_rate_bp": line.tax_rate_bp,
        "tax": line.tax, "total": line.total, "quantity_fulfilled": line.quantity_fulfilled,
    }


def fulfilment(f: FulfilmentView) -> dict[str, Any]:
    return {
        "id": f.fulfilment_id, "object": "fulfilment",
        "lines": [{"line_id": x.line_id, "quantity": x.quantity} for x in f.lines],
        "shipped_at": timestamp(f.shipped_at), "carrier": f.carrier, "tracking_number": f.tracking_number,
        "delivered_at": maybe_timestamp(f.delivered_at), "invoice": f.invoice_id,
    }


def order(view: OrderView, livemode: bool) -> dict[str, Any]:
    # reservation_id stays inside: the credit hold is the services' business, not the shopper's
    return {
        "id": view.order_id, "object": "order", "livemode": livemode, "order_number": view.order_number,
        "cart_id": view.cart_id, "customer_id": view.customer_id, "bill_to_id": view.bill_to_id,
        "channel": view.channel, "status": view.status, "terms": view.terms, "currency": view.currency,
        "subtotal": view.subtotal, "tax": view.tax, "total": view.total, "notes": view.notes,
        "po_number": view.po_number, "lines": [order_line(x) for x in view.lines],
        "status_transitions": [{"status": t.status, "at": timestamp(t.at)} for t in view.status_transitions],
        "fulfilments": [fulfilment(f) for f in view.fulfilments],
        "cancellation_reason": view.cancellation_reason, "cancelled_by": view.cancelled_by,
        "created_at": timestamp(view.created_at),
    }


def invoice_line(line: InvoiceLine) -> dict[str, Any]:
    return {
        "object": "invoice_line", "order_line": line.line_id, "sku": line.sku, "base_uom": line.base_uom,
        "quantity": line.quantity, "unit_price": line.unit_price, "subtotal": line.subtotal,
        "tax_category": str(line.tax_category), "tax_rate_bp": line.tax_rate_bp, "tax": line.tax,
        "total": line.total,
    }


def invoice(view: InvoiceView, livemode: bool) -> dict[str, Any]:
    return {
        "id": view.invoice_id, "object": "invoice", "livemode": livemode, "invoice_number": view.invoice_number,
        "order": view.order_id, "order_number": view.order_number, "customer": view.customer_id,
        "bill_to": view.bill_to_id, "fulfilment": view.fulfilment_id, "status": view.status, "terms": view.terms,
        "currency": view.currency, "subtotal": view.subtotal, "tax": view.tax, "total": view.total,
        "amount_paid": view.amount_paid, "amount_due": view.amount_due, "overdue": view.overdue,
        "lines": [invoice_line(x) for x in view.lines], "issued_at": timestamp(view.issued_at),
        "due_at": maybe_timestamp(view.due_at), "paid_at": maybe_timestamp(view.paid_at),
        "voided_at": maybe_timestamp(view.voided_at),
    }


def open_invoice(inv: OpenInvoice) -> dict[str, Any]:
    """An unpaid invoice as credit knows it: what paying it would free (GET /v1/credit, the 402's remedies)."""
    return {"id": inv.invoice_id, "invoice_number": inv.invoice_number, "amount_due": inv.amount_due,
            "due_at": maybe_timestamp(inv.due_at), "overdue": inv.overdue}


def credit_account(view: CreditAccountView, livemode: bool) -> dict[str, Any]:
    return {
        "object": "credit_account", "livemode": livemode, "customer_id": view.customer_id,
        "bill_to_id": view.bill_to_id, "terms": view.terms, "currency": view.currency, "limit": view.limit,
        "exposure": view.exposure, "available": view.available, "unapplied": view.unapplied,
        "open_invoices": [open_invoice(x) for x in view.open_invoices],
    }


def webhook_endpoint(view: WebhookEndpointView, livemode: bool) -> dict[str, Any]:
    """`secret` only when the view carries it (the create and rotate answers); never in a list or an event."""
    obj: dict[str, Any] = {
        "id": view.endpoint_id, "object": "webhook_endpoint", "livemode": livemode, "url": view.url,
        "enabled_events": list(view.enabled_events), "description": view.description, "status": view.status,
        "created": timestamp(view.created_at),
    }
    if view.secret is not None:
        obj["secret"] = view.secret
    return obj


def deleted_webhook_endpoint(endpoint_id: str, livemode: bool) -> dict[str, Any]:
    return {"id": endpoint_id, "object": "webhook_endpoint", "livemode": livemode, "deleted": True}


def webhook_delivery(view: WebhookDeliveryView) -> dict[str, Any]:
    return {
        "id": view.delivery_id, "object": "webhook_delivery", "endpoint": view.endpoint_id, "event": view.event_id,
        "event_type": view.event_type, "attempt": view.attempt, "created": timestamp(view.attempted_at),
        "outcome": view.outcome, "status_code": view.status_code, "error": view.error,
        "latency_ms": view.latency_ms, "response_body": view.response_body,
        "next_attempt": maybe_timestamp(view.next_attempt_at),
    }


def event(view: EventView, livemode: bool) -> dict[str, Any]:
    """The API's event and the webhook body alike: `data.object` is the object as the API shows it."""
    return {"id": view.event_id, "object": "event", "type": view.event_type, "created": timestamp(view.created_at),
            "livemode": livemode, "data": view.data}


def listing(url: str, data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "url": url, "data": data, "has_more": has_more}
