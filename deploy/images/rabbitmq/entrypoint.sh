#!/bin/sh
# The official image's RABBITMQ_DEFAULT_USER/PASS as a config file Debian's server reads; then
# the server itself, as the rabbitmq user and as PID 1: RabbitMQ's own start script, which
# stops the node cleanly on SIGTERM (`docker stop`). Not Debian's /usr/sbin wrapper, nor su:
# each stays in between as a shell that passes no signal on, and the node would be killed.
set -eu
mkdir -p /etc/rabbitmq/conf.d
{
  echo "default_user = ${RABBITMQ_DEFAULT_USER:-guest}"
  echo "default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}"
  echo "loopback_users = none"
} >/etc/rabbitmq/conf.d/10-defaults.conf
chgrp rabbitmq /etc/rabbitmq/conf.d/10-defaults.conf
chmod 0640 /etc/rabbitmq/conf.d/10-defaults.conf
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
export HOME=/var/lib/rabbitmq
cd /var/lib/rabbitmq
exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server
