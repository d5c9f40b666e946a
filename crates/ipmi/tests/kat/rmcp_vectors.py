#!/usr/bin/env python3
"""Known-answer vectors for the agent's RMCP+ crypto, computed independently of the Rust code.

IPMI 2.0 §13.31-13.32 formulas, with Python's hmac/hashlib for RAKP and key derivation and the
openssl command line for AES-CBC-128. The Rust test (crates/ipmi/src/rakp.rs, `kat`) runs this
script and compares every value. Prints one JSON object per cipher suite (3 and 17).
"""
import hashlib
import hmac
import json
import subprocess

USER = b"admin"
PASSWORD = b"password"
ROLE = 0x14  # name-only lookup | administrator
SIDM = 0xA0A1A2A3  # remote console session id
SIDC = 0x01020304  # managed system session id
RM = bytes(range(0x10, 0x20))
RC = bytes(range(0x40, 0x50))
GUID = bytes.fromhex("a123456789abcdefa123456789abcdef")
IV = bytes(range(0x60, 0x70))
PLAIN = bytes.fromhex("2018c881040177")  # an IPMI Get Device ID request message
SIGNED = bytes(range(0, 36))  # stand-in for auth type .. next header of a packet

SUITES = {3: (hashlib.sha1, 20, 12), 17: (hashlib.sha256, 32, 16)}


def le32(v):
    return v.to_bytes(4, "little")


def mac(h, key, data):
    return hmac.new(key, data, h).digest()


def aes_cbc(key, iv, data):
    out = subprocess.run(
        ["openssl", "enc", "-aes-128-cbc", "-nopad", "-K", key.hex(), "-iv", iv.hex()],
        input=data, capture_output=True, check=True)
    return out.stdout


def vectors(suite):
    h, _, icv_len = SUITES[suite]
    kuid = PASSWORD.ljust(20, b"\0")
    name = bytes([ROLE, len(USER)]) + USER
    rakp2 = mac(h, kuid, le32(SIDM) + le32(SIDC) + RM + RC + GUID + name)
    rakp3 = mac(h, kuid, RC + le32(SIDM) + name)
    sik = mac(h, kuid, RM + RC + name)
    # The key-derivation constants are 20 bytes whatever the hash (IPMI 2.0 section 13.32;
    # ipmitool's CONST_1/CONST_2 and FreeIPMI's IPMI_KEY_CONSTANT_LENGTH are 20 too).
    k1 = mac(h, sik, bytes([1]) * 20)
    k2 = mac(h, sik, bytes([2]) * 20)
    rakp4 = mac(h, sik, RM + le32(SIDC) + GUID)[:icv_len]
    auth_code = mac(h, k1, SIGNED)[:icv_len]
    pad = (16 - (len(PLAIN) + 1) % 16) % 16
    trailer = bytes(range(1, pad + 1)) + bytes([pad])
    cipher = IV + aes_cbc(k2[:16], IV, PLAIN + trailer)
    return {k: v.hex() for k, v in dict(
        rakp2=rakp2, rakp3=rakp3, sik=sik, k1=k1, k2=k2, rakp4=rakp4,
        auth_code=auth_code, cipher=cipher).items()} | {"suite": suite}


if __name__ == "__main__":
    for s in SUITES:
        print(json.dumps(vectors(s)))
