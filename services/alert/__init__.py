"""alert: tagged articles → alerts (Kafka topic and webhooks), once per rule and story."""
