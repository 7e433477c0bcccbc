"""Events for subscribers: records what happened, and delivers it as signed webhooks (docs/api.md, "Webhooks")."""
