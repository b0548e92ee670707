"""What both services run on: config base models, logs, retry, TLS, secrets, the service loop."""
