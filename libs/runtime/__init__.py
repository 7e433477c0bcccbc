"""What every service needs at run time: settings, broker, database, outbox/inbox, health, logging."""
