"""A real OpenLDAP slapd for the tests, on two free loopback ports (ldap:// and ldaps://).

Uses the Debian `slapd` binary (`apt-get install slapd ldap-utils`), the schema
in /etc/ldap/schema and the modules in /usr/lib/ldap. Everything lives in a
temporary directory removed on stop: a slapd.conf, an mdb database, and a CA
plus a server certificate (for localhost and 127.0.0.1) made with
`cryptography`, so StartTLS on `url` and TLS on `ldaps_url` both verify
against `ca_file`. The directory looks like a small AD-ish tree:

    dc=hospital,dc=test
      cn=hacs-service          the read-only service account (`bind_dn`)
      ou=people                uid=<uid> inetOrgPerson entries
      ou=groups                cn=<name> groupOfNames (member = user DNs)

With the memberof overlay (`memberof_enabled`) users also carry the
operational attribute `memberOf`, which must be asked for by name. Anonymous
clients may only bind; any bound user may read everything but passwords.
Modules that need it import the `slapd` fixture from here.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import ldap3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from ldap3.core.exceptions import LDAPException, LDAPNoSuchObjectResult
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn
from ldap3.utils.hashed import hashed

from tests.support.postgres import free_port

BASE_DN = "dc=hospital,dc=test"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
INSTALL_HINT = "apt-get install -y slapd ldap-utils"


def _slapd_binary() -> str:
    found = shutil.which("slapd") or shutil.which("slapd", path="/usr/sbin:/usr/local/sbin")
    if found is None or not (SCHEMA_DIR / "core.schema").exists():
        raise RuntimeError(f"OpenLDAP slapd is not installed; run `{INSTALL_HINT}`")
    return found


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(
    common_name: str = "HACS test LDAP CA",
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA key and certificate, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


class Slapd:
    def __init__(self) -> None:
        self.port = free_port()
        self.ldaps_port = free_port()
        while self.ldaps_port == self.port:
            self.ldaps_port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="hacs-slapd-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.base_dn = BASE_DN
        self.people_dn = f"ou=people,{BASE_DN}"
        self.groups_dn = f"ou=groups,{BASE_DN}"
        self.admin_dn = f"cn=admin,{BASE_DN}"
        self.admin_password = "hacs-ldap-admin-password"
        self.bind_dn = f"cn=hacs-service,{BASE_DN}"
        self.bind_password = "hacs-ldap-service-password"
        self.ca_file = str(self.root / "ca.pem")
        self.memberof_enabled = (MODULE_DIR / "memberof.la").exists() or (
            MODULE_DIR / "memberof.so"
        ).exists()

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def log_path(self) -> Path:
        return self.root / "slapd.log"

    def user_dn(self, uid: str) -> str:
        return f"uid={escape_rdn(uid)},{self.people_dn}"

    def group_dn(self, name: str) -> str:
        return f"cn={escape_rdn(name)},{self.groups_dn}"

    def _write_tls(self) -> None:
        ca_key, ca_cert = make_ca()
        key, cert = _server_cert(ca_key, ca_cert)
        Path(self.ca_file).write_bytes(_pem(ca_cert))
        (self.root / "server.pem").write_bytes(_pem(cert))
        key_path = self.root / "server.key"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)

    def _write_config(self) -> Path:
        data = self.root / "data"
        data.mkdir()
        modules = ["back_mdb"] + (["memberof"] if self.memberof_enabled else [])
        lines = [
            *(f"include {SCHEMA_DIR / s}.schema" for s in ("core", "cosine", "inetorgperson")),
            f"modulepath {MODULE_DIR}",
            *(f"moduleload {m}" for m in modules),
            f"pidfile {self.root / 'slapd.pid'}",
            f"argsfile {self.root / 'slapd.args'}",
            f"TLSCACertificateFile {self.ca_file}",
            f"TLSCertificateFile {self.root / 'server.pem'}",
            f"TLSCertificateKeyFile {self.root / 'server.key'}",
            "TLSVerifyClient never",
            "",
            "database mdb",
            "maxsize 67108864",
            f'suffix "{self.base_dn}"',
            f'rootdn "{self.admin_dn}"',
            f"rootpw {hashed(ldap3.HASHED_SALTED_SHA, self.admin_password)}",
            f"directory {data}",
            "index objectClass eq",
            "index uid,cn,mail eq",
            "index member eq",
            "access to attrs=userPassword by self write by anonymous auth by * none",
            "access to * by users read by * none",
        ]
        if self.memberof_enabled:
            lines += [
                "overlay memberof",
                "memberof-group-oc groupOfNames",
                "memberof-member-ad member",
                "memberof-memberof-ad memberOf",
                "memberof-refint true",
            ]
        conf = self.root / "slapd.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> None:
        binary = _slapd_binary()
        self._write_tls()
        conf = self._write_config()
        with self.log_path.open("wb") as log:
            # -d keeps slapd in the foreground; 256 ("stats") logs connections and binds.
            self.process = subprocess.Popen(
                [binary, "-f", str(conf), "-h", f"{self.url}/ {self.ldaps_url}/", "-d", "256"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                with self.admin():
                    break
            except LDAPException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self._kill()
                raise RuntimeError("slapd did not start:\n" + self.log_tail())
            time.sleep(0.05)
        with self.admin() as conn:
            self._seed(conn)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def admin(self) -> ldap3.Connection:
        """A connection bound as the rootdn over plain ldap:// (use as a context manager)."""
        server = ldap3.Server(self.url, get_info=ldap3.NONE, connect_timeout=2)
        return ldap3.Connection(
            server,
            self.admin_dn,
            self.admin_password,
            auto_bind=True,
            receive_timeout=5,
            raise_exceptions=True,
        )

    def _seed(self, conn: ldap3.Connection) -> None:
        conn.add(
            self.base_dn, ["top", "dcObject", "organization"], {"o": "Hospital", "dc": "hospital"}
        )
        conn.add(self.people_dn, ["top", "organizationalUnit"], {"ou": "people"})
        conn.add(self.groups_dn, ["top", "organizationalUnit"], {"ou": "groups"})
        conn.add(
            self.bind_dn,
            ["top", "applicationProcess", "simpleSecurityObject"],
            {
                "cn": "hacs-service",
                "userPassword": hashed(ldap3.HASHED_SALTED_SHA, self.bind_password),
            },
        )

    def add_user(
        self, uid: str, password: str, cn: str, mail: str, groups: Sequence[str] = ()
    ) -> str:
        """Add uid=<uid> under ou=people (and to each group, made if missing); returns its DN."""
        dn = self.user_dn(uid)
        with self.admin() as conn:
            conn.add(
                dn,
                ["top", "person", "organizationalPerson", "inetOrgPerson"],
                {
                    "uid": uid,
                    "cn": cn,
                    "sn": cn.split()[-1] if cn.split() else uid,
                    "mail": mail,
                    "userPassword": hashed(ldap3.HASHED_SALTED_SHA, password),
                },
            )
        for group in groups:
            self.add_to_group(uid, group)
        return dn

    def remove_user(self, uid: str) -> None:
        """Take the user out of every group, then delete the entry."""
        dn = self.user_dn(uid)
        with self.admin() as conn:
            conn.search(
                self.groups_dn,
                f"(&(objectClass=groupOfNames)(member={escape_filter_chars(dn)}))",
                attributes=["cn"],
            )
            groups = [str(entry.cn.value) for entry in conn.entries]
        for group in groups:
            self.remove_from_group(uid, group)
        with self.admin() as conn:
            conn.delete(dn)

    def _members(self, conn: ldap3.Connection, group_dn: str) -> list[str] | None:
        try:
            conn.search(group_dn, "(objectClass=groupOfNames)", ldap3.BASE, attributes=["member"])
        except LDAPNoSuchObjectResult:
            return None
        return [str(m) for m in conn.entries[0].member.values] if conn.entries else None

    def add_to_group(self, uid: str, group: str) -> None:
        """Add the user to cn=<group> under ou=groups, creating the group if needed."""
        dn, gdn = self.user_dn(uid), self.group_dn(group)
        with self.admin() as conn:
            members = self._members(conn, gdn)
            if members is None:
                conn.add(gdn, ["top", "groupOfNames"], {"cn": group, "member": [dn]})
            elif dn.lower() not in {m.lower() for m in members}:
                conn.modify(gdn, {"member": [(ldap3.MODIFY_ADD, [dn])]})

    def remove_from_group(self, uid: str, group: str) -> None:
        """Remove the user from the group; a group left empty is deleted
        (groupOfNames must have a member)."""
        dn, gdn = self.user_dn(uid), self.group_dn(group)
        with self.admin() as conn:
            members = self._members(conn, gdn)
            if members is None or dn.lower() not in {m.lower() for m in members}:
                return
            if len(members) == 1:
                conn.delete(gdn)
            else:
                conn.modify(gdn, {"member": [(ldap3.MODIFY_DELETE, [dn])]})

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def stop(self) -> None:
        try:
            self._kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def slapd() -> Iterator[Slapd]:
    """A fresh, empty directory for each test (slapd starts in well under a second)."""
    server = Slapd()
    try:
        server.start()
        yield server
    finally:
        server.stop()
