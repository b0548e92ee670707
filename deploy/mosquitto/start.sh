#!/bin/sh
# Build the password file from the environment at start, so no password sits in the image or
# the repository, then run the broker. One variable per user: MQTT_PASSWORD_<USER>, with the
# user's dashes as underscores (MQTT_PASSWORD_PROBE_US_EAST, MQTT_PASSWORD_AGGREGATOR).
set -eu
passwd=/mosquitto/run/passwd  # a tmpfs: the config mount stays read-only
: > "$passwd"
for user in probe-us-east probe-eu-west probe-ap-southeast aggregator; do
  var="MQTT_PASSWORD_$(echo "$user" | tr 'a-z-' 'A-Z_')"
  eval "password=\${$var:-}"
  if [ -z "$password" ]; then
    echo "start.sh: $var is not set" >&2
    exit 2
  fi
  mosquitto_passwd -b "$passwd" "$user" "$password"
done
chmod 0700 "$passwd"
exec mosquitto -c /mosquitto/config/mosquitto.conf
