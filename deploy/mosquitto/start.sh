#!/bin/sh
# Build the password file from the mounted secrets at start, so no password sits in the image
# or the repository, then run the broker. One secret file per user, /run/secrets/
# mqtt-password-<user> (docker-compose.yml mounts them; deploy/make-secrets.sh makes them);
# where a user's file is missing, the variable MQTT_PASSWORD_<USER>, with the user's dashes
# as underscores (MQTT_PASSWORD_PROBE_US_EAST, MQTT_PASSWORD_AGGREGATOR_B).
# MOSQUITTO_RUN, MOSQUITTO_CONFIG and MOSQUITTO_SECRETS move the three paths (the tests run
# this script on a host).
set -eu
run=${MOSQUITTO_RUN:-/mosquitto/run}  # a tmpfs: the config mount stays read-only
config=${MOSQUITTO_CONFIG:-/mosquitto/config/mosquitto.conf}
secrets=${MOSQUITTO_SECRETS:-/run/secrets}
passwd="$run/passwd"
umask 077
: > "$passwd"
for user in probe-us-east probe-eu-west probe-ap-southeast aggregator aggregator-b; do
  file="$secrets/mqtt-password-$user"
  var="MQTT_PASSWORD_$(echo "$user" | tr 'a-z-' 'A-Z_')"
  if [ -f "$file" ]; then
    # Stripped of surrounding white space, as Vigil's services read VIGIL_MQTT_PASSWORD_FILE.
    password=$(sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$file")
  else
    eval "password=\${$var:-}"
  fi
  if [ -z "$password" ]; then
    echo "start.sh: no password for $user: $file is missing or empty and $var is not set" >&2
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
