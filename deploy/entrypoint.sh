#!/bin/sh
# The instance id names the gateway's reply topic (gateway.replies.<id>) and every Kafka client id.
# Unless HARMON_INSTANCE_ID is set it is the container's hostname: stable for the container's life
# (under Kubernetes the pod's name; the gateway's StatefulSet sets it to that explicitly).
set -eu
: "${HARMON_INSTANCE_ID:=${HOSTNAME:-$(cat /proc/sys/kernel/hostname)}}"
export HARMON_INSTANCE_ID
exec "$@"
