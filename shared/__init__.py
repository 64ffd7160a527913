"""newswatch's core, imported by every service: events, topics, settings, app factory, metrics, Redis."""
