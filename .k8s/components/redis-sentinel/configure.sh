#!/bin/sh
# Writes /config/redis.conf and /config/sentinel.conf for this pod (redis-statefulset.yaml).
set -eu
export REDISCLI_AUTH="$(cat /etc/redis/auth/password)"
user="$(cat /etc/redis/auth/username)"
self="$(hostname).housing-api-redis"
master="$(timeout 5 redis-cli -h housing-api-redis -p 26379 --user "$user" --no-auth-warning \
  sentinel get-master-addr-by-name housing 2>/dev/null | head -n 1 || true)"
[ -n "$master" ] || master="housing-api-redis-0.housing-api-redis"
{
  echo "replica-announce-ip $self"
  echo "masteruser replica"
  echo "masterauth $REDISCLI_AUTH"
  [ "$master" = "$self" ] || echo "replicaof $master 6379"
} > /config/redis.conf
{
  echo "port 26379"
  echo "sentinel resolve-hostnames yes"
  echo "sentinel announce-hostnames yes"
  echo "sentinel announce-ip $self"
  echo "sentinel monitor housing $master 6379 2"
  echo "sentinel down-after-milliseconds housing 5000"
  echo "sentinel failover-timeout housing 60000"
  echo "sentinel parallel-syncs housing 1"
  echo "sentinel auth-user housing sentinel"
  echo "sentinel auth-pass housing $REDISCLI_AUTH"
  echo "sentinel sentinel-user $user"
  echo "sentinel sentinel-pass $REDISCLI_AUTH"
  echo "user default off"
  echo "user $user on >$REDISCLI_AUTH allchannels +@all"
} > /config/sentinel.conf
chmod 0600 /config/redis.conf /config/sentinel.conf
