#!/bin/sh
# Build the password file from the environment at start, so no password sits in the image or
# the repository, then run the broker. One variable per user: MQTT_PASSWORD_<USER>, with the
# user's dashes as underscores (MQTT_PASSWORD_PROBE_US_EAST, MQTT_PASSWORD_AGGREGATOR_B).
# MOSQUITTO_RUN and MOSQUITTO_CONFIG move the two paths (the tests run this script on a host).
set -eu
run=${MOSQUITTO_RUN:-/mosquitto/run}  # a tmpfs: the config mount stays read-only
config=${MOSQUITTO_CONFIG:-/mosquitto/config/mosquitto.conf}
passwd="$run/passwd"
umask 077
: > "$passwd"
for user in probe-us-east probe-eu-west probe-ap-southeast aggregator aggregator-b; do
  var="MQTT_PASSWORD_$(echo "$user" | tr 'a-z-' 'A-Z_')"
  eval "password=\${$var:-}"
  if [ -z "$password" ]; then
    echo "start.sh: $var is not set" >&2
    exit 2
  fi
  mosquitto_passwd -b "$passwd" "$user" "$password"
done
# Started as root, mosquitto 2 drops to its own user before it reads the password file: that
# user must own it, and nobody else may read it. (A root-owned 0700 file made the broker exit
# with "Unable to open pwfile" in a restart loop.)
if [ "$(id -u)" = 0 ]; then
  chown mosquitto:mosquitto "$passwd"
fi
chmod 0600 "$passwd"
exec mosquitto -c "$config"
