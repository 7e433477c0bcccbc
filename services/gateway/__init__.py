"""The HTTP API: API keys, shopper tokens, idempotency, and a correlator that turns requests into commands."""
