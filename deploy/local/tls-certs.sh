#!/usr/bin/env bash
# Certificates for the services' mutual TLS on this machine (services.sh with
# CENTRALITA_TLS=1, and the tests), made with openssl: a CA, and leaf certificates it signs
# for both server and client use (EC P-256, valid 30 days). In a cluster cert-manager (or
# the BPO's own PKI) writes the same three files into each service's Secret.
#   deploy/local/tls-certs.sh DIR ca                 # DIR/ca.crt, DIR/ca.key (a new CA)
#   deploy/local/tls-certs.sh DIR leaf NAME [SAN]    # DIR/NAME.crt, DIR/NAME.key, signed by
#                                                    # DIR/ca.*; SAN default
#                                                    # IP:127.0.0.1,DNS:localhost
set -euo pipefail
dir="${1:?usage: $0 DIR ca | DIR leaf NAME [SAN]}"
what="${2:?usage: $0 DIR ca | DIR leaf NAME [SAN]}"
mkdir -p "$dir"
umask 077
case "$what" in
  ca)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
      -subj "/O=Centralita/CN=centralita-local-ca-$(date +%s%N)" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout "$dir/ca.key.new" -out "$dir/ca.crt.new" 2>/dev/null
    mv "$dir/ca.key.new" "$dir/ca.key"
    mv "$dir/ca.crt.new" "$dir/ca.crt"
    ;;
  leaf)
    name="${3:?a leaf needs a NAME}"
    san="${4:-IP:127.0.0.1,DNS:localhost}"
    ext="$(mktemp)"
    trap 'rm -f "$ext" "$dir/$name.csr"' EXIT
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=$san" >"$ext"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=Centralita/CN=$name" \
      -keyout "$dir/$name.key.new" -out "$dir/$name.csr" 2>/dev/null
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
      -days 30 -extfile "$ext" -out "$dir/$name.crt.new" 2>/dev/null
    # The key first, then the certificate: a reader between the two renames sees a
    # mismatched pair and keeps the previous one (see crate::tls), never a half-written file.
    mv "$dir/$name.key.new" "$dir/$name.key"
    mv "$dir/$name.crt.new" "$dir/$name.crt"
    ;;
  *)
    echo "usage: $0 DIR ca | DIR leaf NAME [SAN]" >&2
    exit 2
    ;;
esac
