#!/usr/bin/env bash
# Makes throwaway TLS material for the Redis TLS tests in DIR:
#   ca.crt/ca.key            a CA
#   server.crt/server.key    signed by it, for the name `localhost` only
#   client.crt/client.key    signed by it, for mutual TLS
#   make-certs.sh DIR
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"
quiet() { "$@" >/dev/null 2>&1 || { echo "make-certs.sh: $* failed" >&2; "$@"; exit 1; }; }
quiet openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.crt
for who in server client; do
  quiet openssl req -newkey rsa:2048 -nodes -subj "/CN=$who" -keyout "$who.key" -out "$who.csr"
  echo "subjectAltName=DNS:localhost" > "$who.ext"
  quiet openssl x509 -req -in "$who.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile "$who.ext" -out "$who.crt"
done
