#!/bin/sh
# Make the secret files deploy/docker-compose.yml mounts: a random password for each broker
# login, the demo target's Authorization value ("Bearer demo-<random>"), and a placeholder
# PagerDuty routing key to replace with the real one. A file that
# exists is kept, so running this again never changes a password the broker already has;
# delete a file and run it again to rotate that password, then restart the broker and the
# login's service. Usage: sh deploy/make-secrets.sh [DIR]   (DIR: deploy/secrets/)
#
# Modes: Docker Compose and podman-compose bind-mount a file secret with its host owner and
# mode, and the services read theirs as non-root users (vigil, uid 10001; Alertmanager as
# nobody), so the files are 0644 and the directory 0700: on the host only its owner reaches them.
set -eu
dir=${1:-$(dirname "$0")/secrets}
umask 077
mkdir -p "$dir"
chmod 0700 "$dir"
for user in probe-us-east probe-eu-west probe-ap-southeast aggregator aggregator-b; do
  file="$dir/mqtt-password-$user"
  if [ ! -e "$file" ]; then
    # 32 random bytes as hex: no character mosquitto_passwd or a shell could mangle.
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$file"
    echo >> "$file"
    echo "made $file"
  fi
  chmod 0644 "$file"
done
auth="$dir/omniroute-authorization"
if [ ! -e "$auth" ]; then
  # For the demo target; for a real service write its own: printf 'Bearer %s\n' "$KEY" > ...
  printf 'Bearer demo-%s\n' "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" > "$auth"
  echo "made $auth: for the real service, write 'Bearer <its key>' into it"
fi
chmod 0644 "$auth"
key="$dir/pagerduty-routing-key"
if [ ! -e "$key" ]; then
  echo "replace-with-your-pagerduty-integration-key" > "$key"
  echo "made $key: write your PagerDuty integration key into it"
fi
chmod 0644 "$key"
