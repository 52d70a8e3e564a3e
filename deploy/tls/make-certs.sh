#!/usr/bin/env bash
# Makes two private certificate authorities and the certificates a Strata
# cluster needs for TLS (docs/operations.md, "TLS"), with openssl:
#
#   deploy/tls/make-certs.sh OUT_DIR HOST [HOST...]
#
# OUT_DIR/ca.crt, ca.key        the nodes' authority: it signs node
#                               certificates only. Clients trust it
#                               (--tls-ca), nodes check each other against
#                               it (tls.peer_ca_file).
# OUT_DIR/client-ca.crt, .key   the clients' authority: it signs client
#                               certificates only (tls.client_ca_file).
#                               Kept apart so that no client certificate
#                               can pass for a node on the peer port.
# OUT_DIR/node.crt, node.key    one certificate for every node, valid for
#                               each HOST (names or IP addresses) as a
#                               server and as a client: tls.cert_file and
#                               tls.key_file
# OUT_DIR/client.crt, .key      a client's certificate (--tls-cert and
#                               --tls-key); its CN, strata-client, names the
#                               principal User:strata-client
# OUT_DIR/NAME.crt, NAME.key    with CLIENTS="alice bob", one more client
#                               certificate per name, CN=NAME (User:NAME)
#
# Keep the .key files of the authorities off the brokers. Keys are ECDSA
# P-256; certificates are valid for DAYS days (default 825); the
# authorities are named after CA_NAME (default "Strata"). A real deployment
# would give each node its own certificate: run the script again in the
# same OUT_DIR (the authorities are reused) with that node's names and
# NODE=name, which writes NAME.crt and NAME.key instead of node.*.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 OUT_DIR HOST [HOST...]" >&2
    exit 2
fi
out=$1
shift
days=${DAYS:-825}
mkdir -p "$out"
cd "$out"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }

# authority FILE NAME: a self-signed authority, unless FILE.key exists.
authority() {
    [ -e "$1.key" ] && return
    key "$1.key"
    openssl req -x509 -new -key "$1.key" -sha256 -days "$days" -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$1.crt"
}
authority ca "${CA_NAME:-Strata} node CA"
authority client-ca "${CA_NAME:-Strata} client CA"

san=""
for host in "$@"; do
    if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then
        san+="${san:+,}IP:$host"
    else
        san+="${san:+,}DNS:$host"
    fi
done

# sign AUTHORITY NAME SUBJECT EXTENDED_USAGE [SAN]
sign() {
    local ca=$1 name=$2 subject=$3 usage=$4 alt=${5:-}
    key "$name.key"
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature"
        echo "extendedKeyUsage=$usage"
        [ -n "$alt" ] && echo "subjectAltName=$alt"
    } > "$name.ext"
    openssl req -new -key "$name.key" -subj "$subject" -out "$name.csr"
    openssl x509 -req -in "$name.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -sha256 -days "$days" \
        -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext" "$ca.srl"
}

node=${NODE:-node}
sign ca "$node" "/CN=strata-$node" "serverAuth,clientAuth" "$san"
written="$node"
if [ ! -e client.crt ]; then
    sign client-ca client "/CN=strata-client" "clientAuth"
    written+=",client"
fi
for name in ${CLIENTS:-}; do
    sign client-ca "$name" "/CN=$name" "clientAuth"
    written+=",$name"
done
echo "wrote $(pwd)/{$written}.{crt,key} (authorities: ca.crt, client-ca.crt)"
