"""The redirect server: GET /{token} answers from memory and hands the click to Kafka."""
