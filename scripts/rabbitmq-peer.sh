#!/usr/bin/env bash
# A throwaway RabbitMQ node for side-by-side AMQP runs: loopback only, its own data, log and
# cookie under one temp dir, AMQP on PORT (default 5692), Erlang distribution on PORT+20000,
# no plugins. Prints "PID DIR" once the AMQP port answers; stop it with `kill PID` (then
# `rm -rf DIR`). Needs the Debian rabbitmq-server package (docs/PEERS.md); run as root or as
# the rabbitmq user.
#
#   read -r RABBIT_PID RABBIT_DIR < <(scripts/rabbitmq-peer.sh 5692)
set -euo pipefail
PORT=${1:-5692}
DIR=$(mktemp -d /tmp/ferry-rabbit.XXXXXX)
export HOME=$DIR
export RABBITMQ_MNESIA_BASE=$DIR/mnesia RABBITMQ_LOG_BASE=$DIR/log RABBITMQ_PID_FILE=$DIR/pid
export RABBITMQ_NODENAME=ferry-peer-$PORT@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$PORT RABBITMQ_DIST_PORT=$((PORT + 20000)) ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_ENABLED_PLUGINS_FILE=$DIR/enabled_plugins RABBITMQ_CONFIG_FILE=$DIR/rabbitmq
echo '[].' >"$DIR/enabled_plugins"
echo 'loopback_users.guest = true' >"$DIR/rabbitmq.conf"
/usr/lib/rabbitmq/bin/rabbitmq-server >"$DIR/server.log" 2>&1 &
for _ in $(seq 600); do
    if [ -s "$DIR/pid" ] && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        echo "$(cat "$DIR/pid") $DIR"
        exit 0
    fi
    sleep 0.1
done
echo "rabbitmq-peer.sh: no AMQP listener on $PORT after 60 s; see $DIR/server.log" >&2
exit 1
