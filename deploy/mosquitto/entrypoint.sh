#!/bin/sh
# Writes mosquitto's password file from the environment (.env through docker-compose.yml),
# then runs the command (mosquitto). The file is rewritten at every start, so a password
# changed in .env takes effect with `docker compose up -d`.
#   MQTT_CITYGATE_PASSWORD  user citygate (the gateway)
#   MQTT_DEVICE_PASSWORD    user devices (field devices, the simulator fleet)
#   MOSQUITTO_PASSWORD_FILE where to write it (default /mosquitto/data/passwd, as in mosquitto.conf)
set -eu

file=${MOSQUITTO_PASSWORD_FILE:-/mosquitto/data/passwd}
: "${MQTT_CITYGATE_PASSWORD:?is not set (see .env.example)}"
: "${MQTT_DEVICE_PASSWORD:?is not set (see .env.example)}"

umask 077
rm -f "$file"
mosquitto_passwd -b -c "$file" citygate "$MQTT_CITYGATE_PASSWORD"
mosquitto_passwd -b "$file" devices "$MQTT_DEVICE_PASSWORD"
# mosquitto drops root for its own user before it reads the file.
chown mosquitto:mosquitto "$file" 2>/dev/null || true

exec "$@"
