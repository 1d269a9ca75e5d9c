"""SIP over TLS: media's TLS listener, with a client of Python's `ssl` (OpenSSL) as the peer.

services.sh gives media a TLS listener on the SIP port + 1 with a self-signed certificate for
127.0.0.1 it makes with openssl (`$CENTRALITA_DATA/certs/<run name>/sip.crt`, `sip.key`).
The client here verifies that certificate (hostname 127.0.0.1 against its subjectAltName)
and speaks SIP over the connection, the digest of RFC 2617 computed with hashlib.

Shown: a REGISTER over TLS is challenged (401) and, answered with the right digest, bound
(200, a registration in Redis whose Contact says `transport=tls`); a wrong password is 403;
an INVITE over TLS to a number of no tenant is 404; a client that does not trust the
certificate cannot connect; the certificate files replaced (a rotated Secret) are served
to the next handshakes without a restart of media.
"""
import hashlib
import os
import pathlib
import re
import socket
import ssl
import subprocess
import time
import uuid

import pytest

from conftest import wait_for
from test_voice import sip_addr
from test_voice_register import binding, desk, ha1, m  # noqa: F401 (fixtures)


def tls_addr():
    host, port = sip_addr()
    return host, port + 1


def cert_file():
    data = pathlib.Path(os.environ.get("CENTRALITA_DATA", pathlib.Path(__file__).resolve().parents[3] / ".local"))
    return data / "certs" / os.environ.get("CENTRALITA_RUN_NAME", "dev") / "sip.crt"


pytestmark = pytest.mark.skipif(not cert_file().exists(), reason="services.sh runs media without SIP over TLS")


def context(ca):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca))
    return ctx


class TlsClient:
    """One TLS connection to media, sending requests and reading their final responses."""

    def __init__(self, ca):
        raw = socket.create_connection(tls_addr(), timeout=10)
        self.sock = context(ca).wrap_socket(raw, server_hostname="127.0.0.1")
        self.port = self.sock.getsockname()[1]
        self.buf = b""

    def close(self):
        self.sock.close()

    def response(self):
        while True:
            head, sep, rest = self.buf.partition(b"\r\n\r\n")
            if sep:
                length = int((re.search(rb"(?im)^content-length:\s*(\d+)", head) or [b"", b"0"])[1])
                if len(rest) >= length:
                    self.buf = rest[length:]
                    lines = head.decode(errors="replace").split("\r\n")
                    headers = {}
                    for h in lines[1:]:
                        k, _, v = h.partition(":")
                        headers.setdefault(k.strip().lower(), []).append(v.strip())
                    return int(lines[0].split(" ")[1]), headers
            chunk = self.sock.recv(65535)
            assert chunk, "media closed the connection"
            self.buf += chunk

    def request(self, lines, body=b""):
        self.sock.sendall(("\r\n".join(lines + [f"Content-Length: {len(body)}", "", ""])).encode() + body)
        while True:
            status, headers = self.response()
            if status >= 200:
                return status, headers


def register(c, domain, user, password, call_id, cseq, authorization=None):
    lines = [
        f"REGISTER sip:{domain} SIP/2.0",
        f"Via: SIP/2.0/TLS 127.0.0.1:{c.port};rport;branch=z9hG4bK{uuid.uuid4().hex}",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{domain}>;tag={uuid.uuid4().hex[:8]}",
        f"To: <sip:{user}@{domain}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{user}@127.0.0.1:{c.port};transport=tls>",
        "Expires: 120",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    return c.request(lines)


def digest(challenge, domain, user, password):
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    uri, cnonce, nc = f"sip:{domain}", uuid.uuid4().hex[:16], "00000001"
    ha2 = hashlib.md5(f"REGISTER:{uri}".encode()).hexdigest()
    response = hashlib.md5(f"{ha1(user, params['realm'], password)}:{params['nonce']}:{nc}:{cnonce}:auth:{ha2}"
                           .encode()).hexdigest()
    return (f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", uri="{uri}", '
            f'response="{response}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"')


def test_a_phone_registers_and_a_trunk_calls_over_tls(m, desk, tmp_path):  # noqa: F811
    alice = f"alice-{uuid.uuid4().hex[:6]}"
    desk.setup({alice: "tls-Secret-1"})
    ca = cert_file()
    c = TlsClient(ca)
    try:
        call_id = f"{uuid.uuid4().hex}@127.0.0.1"
        status, headers = register(c, desk.domain, alice, "tls-Secret-1", call_id, 1)
        assert status == 401, (status, headers)
        challenge = headers["www-authenticate"][0]
        status, _ = register(c, desk.domain, alice, "wrong", call_id, 2, digest(challenge, desk.domain, alice, "wrong"))
        assert status == 403
        status, headers = register(c, desk.domain, alice, "tls-Secret-1", call_id, 3,
                                   digest(challenge, desk.domain, alice, "tls-Secret-1"))
        if status == 401:  # the nonce was used by the refused attempt's check: a fresh one
            status, headers = register(c, desk.domain, alice, "tls-Secret-1", call_id, 4,
                                       digest(headers["www-authenticate"][0], desk.domain, alice, "tls-Secret-1"))
        assert status == 200, (status, headers)
        assert "transport=tls" in headers["contact"][0].lower(), headers
        bound = binding(desk.tenant, alice)
        assert bound is not None and "transport=tls" in bound[0].lower(), bound
        # An INVITE over TLS to a number no tenant has.
        branch, tag = uuid.uuid4().hex, uuid.uuid4().hex[:8]
        sdp = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               b"m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        status, _ = c.request([
            "INVITE sip:+34999000111@127.0.0.1 SIP/2.0",
            f"Via: SIP/2.0/TLS 127.0.0.1:{c.port};rport;branch=z9hG4bK{branch}",
            "Max-Forwards: 70",
            f"From: <sip:+34600000000@127.0.0.1>;tag={tag}",
            "To: <sip:+34999000111@127.0.0.1>",
            f"Call-ID: {uuid.uuid4().hex}@127.0.0.1",
            "CSeq: 1 INVITE",
            f"Contact: <sip:caller@127.0.0.1:{c.port};transport=tls>",
            "Content-Type: application/sdp",
        ], sdp)
        assert status == 404, status
    finally:
        c.close()

    # A client that does not trust the certificate cannot connect.
    other = tmp_path / "other.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other",
                    "-keyout", str(tmp_path / "other.key"), "-out", str(other)], check=True, capture_output=True)
    with pytest.raises(ssl.SSLCertVerificationError):
        TlsClient(other)

    # A rotated certificate is served to the next handshakes, media running on.
    before = served_certificate()
    key, crt = ca.with_name("sip.key"), ca
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(tmp_path / "new.key"),
                    "-out", str(tmp_path / "new.crt")], check=True, capture_output=True)
    os.replace(tmp_path / "new.key", key)
    os.replace(tmp_path / "new.crt", crt)
    rotated = time.monotonic()
    assert wait_for(lambda: served_certificate() != before, 20), "the rotated certificate was not picked up"
    print(f"rotated certificate served {time.monotonic() - rotated:.1f} s after the files changed")
    assert served_certificate() == ssl.PEM_cert_to_DER_cert(crt.read_text())
    c = TlsClient(crt)  # verified against the new certificate
    c.close()


def served_certificate():
    """The DER certificate media presents now (read without verifying it)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(tls_addr(), timeout=10) as raw, ctx.wrap_socket(raw) as s:
        return s.getpeercert(binary_form=True)
