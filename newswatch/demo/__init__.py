"""Demo news sites served on 127.0.0.1, for `newswatch run` and the integration tests."""
