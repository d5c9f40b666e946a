#!/bin/sh
# Known answer for VNC Authentication (crates/rfb/src/lib.rs, vnc_auth_known_answer), made with
# OpenSSL rather than our code: DES-ECB of the challenge 00..0f under the password "password"
# with each key byte's bits mirrored.
set -eu
key=$(python3 -c "print(''.join('%02x' % int('{:08b}'.format(c)[::-1], 2) for c in b'password'))")
printf '\000\001\002\003\004\005\006\007\010\011\012\013\014\015\016\017' |
  openssl enc -des-ecb -nopad -provider legacy -provider default -K "$key" | od -An -tx1 | tr -d ' \n'
echo
