"""Credit accounts, limits and reservations; exposure is counted on the bill-to account."""
