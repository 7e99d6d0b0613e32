#!/bin/sh
# Writes the broker's configuration from the environment, then runs it as PID 1
# (it stops cleanly on SIGTERM). AMQP on 5672 on every interface; the default
# user may connect from other hosts (guest may not, RabbitMQ's own rule).
set -eu
umask 077
cat > /var/lib/rabbitmq/rabbitmq.conf <<CONF
listeners.tcp.default = 5672
default_user = ${RABBITMQ_DEFAULT_USER:-guest}
default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}
loopback_users.guest = true
CONF
exec rabbitmq-server "$@"
