"""The ``tls`` section of ``HOME/etc/wazuhcluster.yaml`` and the files it names.

::

    tls:
      mode: prefer          # off | prefer | require (default off)
      ca: certs/ca.pem      # paths may be relative to HOME
      cert: certs/master.pem
      key: certs/master.key
      crl: certs/crl.pem    # optional
      key_overlap: 3600     # seconds a replaced cluster key is still accepted

Every bad value stops start-up with one line naming the key and the fix.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from wazuhcluster.errors import ConfigError
from wazuhcluster.settings import section, settings_path

DEFAULTS: dict[str, Any] = {"mode": "off", "ca": None, "cert": None, "key": None, "crl": None,
                            "key_overlap": 3600}

TlsKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | (
    ed448.Ed448PrivateKey) | dsa.DSAPrivateKey


class Mode(enum.Enum):
    """How a node uses TLS on the cluster link."""

    OFF = "off"  # plain TCP + Fernet, as Wazuh 4.7
    PREFER = "prefer"  # master: TLS and plain peers on the same port; worker: dial with TLS
    REQUIRE = "require"  # master: plain peers refused; worker: dial with TLS


@attrs.frozen
class TlsSettings:
    """The validated ``tls`` section; paths are absolute."""

    mode: Mode = Mode.OFF
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    crl: str | None = None
    key_overlap: float = 3600.0

    @property
    def enabled(self) -> bool:
        """True in ``prefer`` and ``require`` mode."""
        return self.mode is not Mode.OFF


def parse_settings(settings: Mapping[str, Mapping[str, Any]], home: str) -> TlsSettings:
    """Validate the ``tls`` section.

    :raises ConfigError: one line naming the bad key and the fix.
    """
    path = settings_path(home)
    values = section(settings, "tls", DEFAULTS, path)
    mode_text = values["mode"]
    if mode_text is False:  # YAML reads a bare `off` as false
        mode_text = "off"
    try:
        mode = Mode(mode_text)
    except ValueError:
        raise ConfigError(f"{path}: tls.mode = {mode_text!r} is invalid: expected 'off', "
                          "'prefer' or 'require'") from None
    overlap = values["key_overlap"]
    if isinstance(overlap, bool) or not isinstance(overlap, int | float) or overlap < 0:
        raise ConfigError(f"{path}: tls.key_overlap = {overlap!r} is invalid: expected a number "
                          "of seconds >= 0")
    paths: dict[str, str | None] = {}
    for name in ("ca", "cert", "key", "crl"):
        value = values[name]
        if value is None:
            paths[name] = None
            continue
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: tls.{name} = {value!r} is invalid: expected a file path")
        paths[name] = value if os.path.isabs(value) else os.path.join(home, value)
    if mode is not Mode.OFF:
        for name in ("ca", "cert", "key"):
            if paths[name] is None:
                raise ConfigError(f"{path}: tls.{name} is missing: tls.mode {mode.value!r} needs "
                                  "ca, cert and key (make them with wazuhcluster-certs)")
    return TlsSettings(mode=mode, ca=paths["ca"], cert=paths["cert"], key=paths["key"],
                       crl=paths["crl"], key_overlap=float(overlap))


@attrs.frozen
class TlsMaterial:
    """The certificates and keys a node's TLS contexts are built from."""

    cas: tuple[x509.Certificate, ...]
    chain: tuple[x509.Certificate, ...]  # our certificate first, then intermediates
    key: TlsKey
    crls: tuple[x509.CertificateRevocationList, ...] = ()

    @property
    def cert(self) -> x509.Certificate:
        """Our own certificate."""
        return self.chain[0]

    def revoked(self, serial: int) -> bool:
        """True if a loaded CRL lists ``serial``."""
        return any(crl.get_revoked_certificate_by_serial_number(serial) is not None
                   for crl in self.crls)


def load_material(tls: TlsSettings) -> TlsMaterial:
    """Read the files of ``tls`` (``mode`` must not be ``off``).

    :raises ConfigError: a file missing, unreadable, not PEM, a key that does not match the
        certificate, or a CRL not signed by the CA.
    """
    assert tls.ca is not None and tls.cert is not None and tls.key is not None
    cas = _read(tls.ca, "ca", x509.load_pem_x509_certificates)
    chain = _read(tls.cert, "cert", x509.load_pem_x509_certificates)
    key = _read(tls.key, "key", lambda data: serialization.load_pem_private_key(data, None))
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey |
                      ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey | dsa.DSAPrivateKey):
        raise ConfigError(f"tls.key {tls.key}: unsupported key type: use an RSA or EC key")
    if key.public_key() != chain[0].public_key():
        raise ConfigError(f"tls.key {tls.key} does not belong to tls.cert {tls.cert}: point both "
                          "at the files of the same node")
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    if tls.crl is not None:
        crl = _read(tls.crl, "crl", x509.load_pem_x509_crl)
        if not any(_signed_by(crl, ca) for ca in cas):
            raise ConfigError(f"tls.crl {tls.crl} is not signed by the CA of tls.ca {tls.ca}: "
                              "use the CA's own CRL")
        crls = (crl,)
    return TlsMaterial(cas=tuple(cas), chain=tuple(chain), key=key, crls=crls)


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    public = ca.public_key()
    return crl.issuer == ca.subject and isinstance(
        public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | dsa.DSAPublicKey) and (
        crl.is_signature_valid(public))


def _read(path: str, name: str, parse: Any) -> Any:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"tls.{name} {path} cannot be read ({e.strerror}): fix the path in "
                          "etc/wazuhcluster.yaml or the file's permissions") from None
    try:
        value = parse(data)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"tls.{name} {path} is not a valid PEM file ({e})") from None
    if isinstance(value, list) and not value:
        raise ConfigError(f"tls.{name} {path} holds no certificate")
    return value
