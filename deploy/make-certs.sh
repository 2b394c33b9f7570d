#!/usr/bin/env bash
# Makes the TLS material of a raftkv cluster with openssl: two CAs and three certificates (ECDSA P-256).
#
#   deploy/make-certs.sh DIR NAME...
#
# NAME: every DNS name or IP address the nodes are reached by (clients, other members, probes), e.g.
#   deploy/make-certs.sh deploy/certs raftkv1 raftkv2 raftkv3 localhost 127.0.0.1                   # Compose
#   deploy/make-certs.sh deploy/certs raftkv-0.raftkv-peers raftkv-1.raftkv-peers raftkv-2.raftkv-peers \
#     raftkv localhost 127.0.0.1                                                                    # Kubernetes
#
# Writes into DIR (refusing to overwrite an existing ca.pem):
#   ca.pem            client CA: signs server.pem and client.pem   (--trusted-ca-file, the CLI's --cacert)
#   server.pem  server-key.pem   the client and HTTP ports' certificate of every node (--cert-file, --key-file);
#                     also presented when a member forwards a request to the leader, so it is a client certificate too
#   client.pem  client-key.pem   for the CLI and other clients (--cert, --key) when --client-cert-auth is on
#   peer-ca.pem       peer CA: signs peer.pem only (--peer-trusted-ca-file)
#   peer.pem    peer-key.pem     the peer port's certificate (--peer-cert-file, --peer-key-file)
#   ca-key.pem peer-ca-key.pem   the CAs' keys: keep them off the nodes (they sign new certificates)
#
# Two CAs, so that a client certificate can never pass as a peer: whoever holds a certificate of the peer CA can
# speak Raft. One certificate for all nodes keeps the Kubernetes Secret and the Compose mount simple; make one per
# node (the same commands, other NAMEs) if a node's key must not be able to impersonate the others. Certificates
# last DAYS days (default 825); a node reloads replaced files within 2 s, or on SIGHUP, without a restart.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
dir=$1
shift
days=${DAYS:-825}
[ -e "$dir/ca.pem" ] && { echo "$dir/ca.pem exists: not overwriting (remove $dir first)" >&2; exit 1; }
mkdir -p "$dir"
umask 077

san=""
for name in "$@"; do
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then san+="IP:$name,"; else san+="DNS:$name,"; fi
done
san=${san%,}

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() { # ca NAME SUBJECT
  key "$dir/$1-key.pem"
  openssl req -x509 -new -key "$dir/$1-key.pem" -out "$dir/$1.pem" -days "$days" -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}

leaf() { # leaf NAME CA CN EXTENDED_KEY_USAGE [SAN]
  local ext
  ext="$(mktemp)"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$4"
    [ -z "${5:-}" ] || echo "subjectAltName=$5"
  } > "$ext"
  key "$dir/$1-key.pem"
  openssl req -new -key "$dir/$1-key.pem" -subj "/CN=$3" -out "$dir/$1.csr"
  openssl x509 -req -in "$dir/$1.csr" -CA "$dir/$2.pem" -CAkey "$dir/$2-key.pem" -CAcreateserial \
    -days "$days" -extfile "$ext" -out "$dir/$1.pem" 2>/dev/null
  rm -f "$ext" "$dir/$1.csr"
}

ca ca "raftkv client CA"
ca peer-ca "raftkv peer CA"
leaf server ca "raftkv node" serverAuth,clientAuth "$san"
leaf client ca "raftkv client" clientAuth
leaf peer peer-ca "raftkv peer" serverAuth,clientAuth "$san"
rm -f "$dir"/*.srl
chmod 0644 "$dir"/*.pem
chmod 0600 "$dir"/*-key.pem
echo "wrote $dir: ca.pem server.pem client.pem peer-ca.pem peer.pem and their keys (SAN $san)"
echo "client flags: --cacert $dir/ca.pem --cert $dir/client.pem --key $dir/client-key.pem"
