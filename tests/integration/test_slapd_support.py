"""The slapd test server itself: binds, groups, StartTLS and LDAPS, removal.

These pin down what the LDAP sign-in tests will rely on, so a broken slapd
install fails here first, with a plain message.
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

import ldap3
import pytest
from cryptography.hazmat.primitives import serialization
from ldap3.core.exceptions import (
    LDAPPasswordIsMandatoryError,
    LDAPSocketOpenError,
    LDAPStartTLSError,
)
from ldap3.utils.conv import escape_filter_chars

from tests.support.slapd import Slapd, make_ca, slapd  # noqa: F401  (the fixture)

PASSWORD = "correct horse battery staple"


def _bind(url: str, user: str, password: str, tls: ldap3.Tls | None = None) -> ldap3.Connection:
    server = ldap3.Server(url, tls=tls, get_info=ldap3.NONE, connect_timeout=2)
    return ldap3.Connection(server, user, password, receive_timeout=5)


def _verifying(ca_file: str | None) -> ldap3.Tls:
    return ldap3.Tls(ca_certs_file=ca_file, validate=ssl.CERT_REQUIRED)


def test_user_binds_with_the_right_password_only(slapd: Slapd) -> None:  # noqa: F811
    dn = slapd.add_user("alice", PASSWORD, "Alice Smith", "alice@hospital.test")

    conn = _bind(slapd.url, dn, PASSWORD)
    assert conn.bind()
    assert conn.extend.standard.who_am_i() == f"dn:{dn}"
    conn.unbind()

    conn = _bind(slapd.url, dn, "wrong password")
    assert not conn.bind()
    assert conn.result["description"] == "invalidCredentials"

    # An empty password would be an unauthenticated (anonymous) bind; ldap3 refuses it.
    with pytest.raises(LDAPPasswordIsMandatoryError):
        _bind(slapd.url, dn, "").bind()


def test_groups_are_found_by_member_and_by_member_of(slapd: Slapd) -> None:  # noqa: F811
    dn = slapd.add_user("bob", PASSWORD, "Bob Jones", "bob@hospital.test", groups=["clinicians"])
    slapd.add_user("carol", PASSWORD, "Carol White", "carol@hospital.test", groups=["admins"])
    slapd.add_to_group("bob", "auditors")

    with _bind(slapd.url, slapd.bind_dn, slapd.bind_password) as conn:
        conn.search(
            slapd.groups_dn,
            f"(&(objectClass=groupOfNames)(member={escape_filter_chars(dn)}))",
            attributes=["cn"],
        )
        assert sorted(e.cn.value for e in conn.entries) == ["auditors", "clinicians"]

        if slapd.memberof_enabled:
            conn.search(slapd.people_dn, "(uid=bob)", attributes=["memberOf", "mail"])
            assert conn.entries[0].mail.value == "bob@hospital.test"
            assert sorted(conn.entries[0].memberOf.values) == [
                slapd.group_dn("auditors"),
                slapd.group_dn("clinicians"),
            ]

        slapd.remove_from_group("bob", "auditors")
        conn.search(slapd.groups_dn, "(objectClass=groupOfNames)", attributes=["cn"])
        assert sorted(e.cn.value for e in conn.entries) == ["admins", "clinicians"]
        if slapd.memberof_enabled:
            conn.search(slapd.people_dn, "(uid=bob)", attributes=["memberOf"])
            assert conn.entries[0].memberOf.values == [slapd.group_dn("clinicians")]

        # Passwords are for binding only, even for the service account.
        conn.search(slapd.people_dn, "(uid=bob)", attributes=["userPassword"])
        # (ldap3 lists a requested attribute it did not get as empty.)
        assert conn.entries[0].entry_attributes_as_dict.get("userPassword", []) == []

    with _bind(slapd.url, "", "") as anonymous:
        anonymous.search(slapd.base_dn, "(uid=bob)")
        assert anonymous.entries == []


def test_starttls_verifies_against_the_ca(slapd: Slapd) -> None:  # noqa: F811
    dn = slapd.add_user("dave", PASSWORD, "Dave Brown", "dave@hospital.test")
    conn = _bind(slapd.url, dn, PASSWORD, _verifying(slapd.ca_file))
    conn.open()
    assert conn.start_tls()
    assert conn.bind()
    assert conn.extend.standard.who_am_i() == f"dn:{dn}"
    conn.unbind()


def test_ldaps_verifies_against_the_ca(slapd: Slapd) -> None:  # noqa: F811
    dn = slapd.add_user("erin", PASSWORD, "Erin Green", "erin@hospital.test")
    conn = _bind(slapd.ldaps_url, dn, PASSWORD, _verifying(slapd.ca_file))
    assert conn.bind()
    assert conn.server.ssl
    assert conn.extend.standard.who_am_i() == f"dn:{dn}"
    conn.unbind()


def test_a_client_that_does_not_trust_the_ca_is_refused(slapd: Slapd) -> None:  # noqa: F811
    dn = slapd.add_user("frank", PASSWORD, "Frank Black", "frank@hospital.test")
    with tempfile.TemporaryDirectory() as tmp:
        other_ca = Path(tmp) / "other-ca.pem"
        other_ca.write_bytes(make_ca("Some other CA")[1].public_bytes(serialization.Encoding.PEM))
        for ca_file in (None, str(other_ca)):  # the system store, then an unrelated CA
            with pytest.raises(LDAPSocketOpenError):
                _bind(slapd.ldaps_url, dn, PASSWORD, _verifying(ca_file)).bind()
            conn = _bind(slapd.url, dn, PASSWORD, _verifying(ca_file))
            conn.open()
            with pytest.raises(LDAPStartTLSError):
                conn.start_tls()


def test_a_removed_user_can_no_longer_bind(slapd: Slapd) -> None:  # noqa: F811
    dn = slapd.add_user("gina", PASSWORD, "Gina Grey", "gina@hospital.test", groups=["nurses"])
    slapd.add_user("hank", PASSWORD, "Hank Hill", "hank@hospital.test", groups=["nurses"])
    assert _bind(slapd.url, dn, PASSWORD).bind()

    slapd.remove_user("gina")

    conn = _bind(slapd.url, dn, PASSWORD)
    assert not conn.bind()
    assert conn.result["description"] == "invalidCredentials"
    with _bind(slapd.url, slapd.bind_dn, slapd.bind_password) as service:
        service.search(slapd.groups_dn, f"(member={escape_filter_chars(dn)})")
        assert service.entries == []
        service.search(slapd.group_dn("nurses"), "(objectClass=*)", attributes=["member"])
        assert service.entries[0].member.values == [slapd.user_dn("hank")]


def test_a_missing_slapd_is_reported_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("shutil.which", lambda *args, **kwargs: None)
    server = Slapd()
    try:
        with pytest.raises(RuntimeError, match="apt-get install -y slapd ldap-utils"):
            server.start()
    finally:
        server.stop()
