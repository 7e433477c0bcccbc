"""Events for subscribers: records what happened (signed webhook deliveries come later)."""
