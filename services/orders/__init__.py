"""The checkout saga, orders and (later) invoices."""
