"""The application layer: the CLI, the local runner and the demo news sites, above the services."""
