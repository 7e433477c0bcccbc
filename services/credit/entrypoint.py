"""Subscriptions of the credit service: which message on which topic goes to which handler."""

from libs.contracts import credit as c
from libs.contracts import invoices as i
from libs.contracts import topics
from libs.contracts.erp import CreditLimitUpsert, CustomerUpsert
from libs.runtime.context import ServiceContext, subscribe

from . import handlers


def register(ctx: ServiceContext) -> None:
    subscribe(ctx, topics.CREDIT_COMMANDS, {
        c.ReserveCredit: handlers.reserve_credit,
        c.ReleaseCredit: handlers.release_credit,
    }, queries={c.GetCreditAccount: handlers.get_credit_account})
    subscribe(ctx, topics.ERP_CUSTOMERS, {CustomerUpsert: handlers.upsert_customer})
    subscribe(ctx, topics.ERP_CREDIT_LIMITS, {CreditLimitUpsert: handlers.upsert_credit_limit})
    # every type orders emits there: the invoice copies, the capture and the unapplied ledger (docs/credit.md)
    subscribe(ctx, topics.INVOICES_EVENTS, {
        i.InvoiceIssued: handlers.invoice_issued,
        i.InvoiceDueDateSet: handlers.invoice_due_date_set,
        i.PaymentApplied: handlers.payment_applied,
        i.InvoicePaid: handlers.invoice_paid,
        i.InvoiceVoided: handlers.invoice_voided,
        i.InvoiceOverdue: handlers.invoice_overdue,
        i.PaymentUnapplied: handlers.payment_unapplied,
    })
