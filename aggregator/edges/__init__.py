"""The edges: the only modules that speak MQTT, HTTP to Alertmanager, and HTTP to operators."""
