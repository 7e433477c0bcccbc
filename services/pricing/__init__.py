"""Catalog, units of measure, contract prices and GCT: what a customer pays, per line."""
