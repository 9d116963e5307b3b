"""The forwarder: records clicks from Kafka and delivers them to customers' endpoints."""
