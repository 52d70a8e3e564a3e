#!/usr/bin/env bash
# Makes a private certificate authority and the certificates a Strata
# cluster needs for TLS (docs/operations.md, "TLS"), with openssl:
#
#   deploy/tls/make-certs.sh OUT_DIR HOST [HOST...]
#
# OUT_DIR/ca.crt, ca.key      the authority (keep ca.key off the brokers)
# OUT_DIR/node.crt, node.key  one certificate for every node, valid for each
#                             HOST (names or IP addresses) as a server and as
#                             a client: tls.cert_file / tls.key_file
# OUT_DIR/client.crt, .key    a client's certificate, for --tls-cert and
#                             --tls-key when tls.client_ca_file is set
#                             (its CN, strata-client, names the principal
#                             User:strata-client for authorization.*)
# OUT_DIR/NAME.crt, NAME.key  with CLIENTS="alice bob", one more client
#                             certificate per name, CN=NAME (User:NAME)
#
# Keys are ECDSA P-256; certificates are valid for DAYS days (default 825);
# the authority is named CA_NAME (default "Strata CA").
# A real deployment would give each node its own certificate: run it once
# per node with that node's names, reusing the CA (CA_DIR=dir with ca.crt
# and ca.key in it).
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

if [ -n "${CA_DIR:-}" ]; then
    cp "$CA_DIR/ca.crt" "$CA_DIR/ca.key" .
elif [ ! -e ca.key ]; then
    key ca.key
    openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/CN=${CA_NAME:-Strata CA}" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt
fi

san=""
for host in "$@"; do
    if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then
        san+="${san:+,}IP:$host"
    else
        san+="${san:+,}DNS:$host"
    fi
done

# sign NAME SUBJECT EXTENDED_USAGE [SAN]
sign() {
    local name=$1 subject=$2 usage=$3 alt=${4:-}
    key "$name.key"
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature"
        echo "extendedKeyUsage=$usage"
        [ -n "$alt" ] && echo "subjectAltName=$alt"
    } > "$name.ext"
    openssl req -new -key "$name.key" -subj "$subject" -out "$name.csr"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days "$days" \
        -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

sign node "/CN=strata-node" "serverAuth,clientAuth" "$san"
sign client "/CN=strata-client" "clientAuth"
for name in ${CLIENTS:-}; do
    sign "$name" "/CN=$name" "clientAuth"
done
rm -f ca.srl
echo "wrote $(pwd)/{ca,node,client${CLIENTS:+,${CLIENTS// /,}}}.{crt,key}"
