"""Carts and lines, scoped to a customer; freeze / complete / release for the checkout saga."""
