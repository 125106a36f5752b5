#!/bin/bash
# apache/kafka's healthcheck command, answered by Tansu: exit 0 when the
# broker at --bootstrap-server serves a metadata request. (`tansu topic list`
# hangs while nothing listens: hence the timeout.)
set -uo pipefail
server=localhost:9092
while (($#)); do
    case $1 in
    --bootstrap-server) server=$2; shift 2 ;;
    --bootstrap-server=*) server=${1#*=}; shift ;;
    *) shift ;;
    esac
done
exec timeout 5 tansu topic list --broker "tcp://$server" >/dev/null
