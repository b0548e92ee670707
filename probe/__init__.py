"""The regional probe agent: checks targets and publishes results over MQTT."""
