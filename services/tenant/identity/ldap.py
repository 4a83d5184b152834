"""LDAP and Active Directory: a password checked by binding as its owner.

The flow: bind as the service account (over LDAPS, or StartTLS before anything is
sent), find the one person `user_filter` names, bind again as that entry with the given
password, read their groups (a group search, or `memberOf`). Certificates are verified
against the registered CA (or the system's). Every failure a caller could learn from —
an unknown name, a wrong password, an empty one — is the same UNAUTHENTICATED answer;
a directory HACS cannot reach or whose service account is refused is UNAVAILABLE.

ldap3 blocks: every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any

from ldap3 import BASE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from services.common.errors import Unauthenticated, Unavailable
from services.tenant.identity.providers import Person

BAD_CREDENTIALS = "user name or password not recognised"
TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class LdapConfig:
    url: str
    start_tls: bool
    ca_certificate_pem: str
    bind_dn: str
    bind_password_ref: str
    user_base_dn: str
    user_filter: str
    group_base_dn: str = ""
    group_filter: str = "(member={dn})"
    group_name_attribute: str = "cn"
    sync_interval_seconds: int = 300

    @classmethod
    def of(cls, config: dict[str, Any]) -> LdapConfig:
        return cls(
            url=str(config.get("url", "")),
            start_tls=bool(config.get("start_tls", False)),
            ca_certificate_pem=str(config.get("ca_certificate_pem", "")),
            bind_dn=str(config.get("bind_dn", "")),
            bind_password_ref=str(config.get("bind_password_ref", "")),
            user_base_dn=str(config.get("user_base_dn", "")),
            user_filter=str(config.get("user_filter", "")),
            group_base_dn=str(config.get("group_base_dn", "")),
            group_filter=str(config.get("group_filter") or "(member={dn})"),
            group_name_attribute=str(config.get("group_name_attribute") or "cn"),
            sync_interval_seconds=int(config.get("sync_interval_seconds") or 300),
        )


class Directory:
    """One registered directory, reached with the service account's password."""

    def __init__(self, config: LdapConfig, service_password: str) -> None:
        self._config = config
        self._password = service_password
        tls = Tls(
            validate=ssl.CERT_REQUIRED,
            version=ssl.PROTOCOL_TLS_CLIENT,
            ca_certs_data=config.ca_certificate_pem or None,
        )
        self._server = Server(
            config.url,
            use_ssl=config.url.lower().startswith("ldaps://"),
            tls=tls,
            connect_timeout=TIMEOUT_SECONDS,
        )

    async def authenticate(self, username: str, password: str) -> Person:
        if not username or not password:  # some directories take an empty password as anonymous
            raise Unauthenticated(BAD_CREDENTIALS)
        return await asyncio.to_thread(self._authenticate, username, password)

    async def lookup(self, dn: str) -> Person | None:
        """The person at `dn` now, with their groups; None when the entry is gone."""
        return await asyncio.to_thread(self._lookup, dn)

    def _connect(self, user: str, password: str) -> Connection | None:
        """An open, bound connection, or None when the bind is refused."""
        connection = Connection(
            self._server, user=user, password=password, receive_timeout=TIMEOUT_SECONDS
        )
        try:
            connection.open()
            if self._config.start_tls:
                connection.start_tls()
            if not connection.bind():
                connection.unbind()
                return None
        except LDAPException as exc:
            raise Unavailable(f"cannot reach the directory {self._config.url}: {exc}") from exc
        return connection

    def _service(self) -> Connection:
        connection = self._connect(self._config.bind_dn, self._password)
        if connection is None:
            raise Unavailable(
                f"the directory {self._config.url} refused HACS's service account "
                f"{self._config.bind_dn}"
            )
        return connection

    def _authenticate(self, username: str, password: str) -> Person:
        service = self._service()
        try:
            query = self._config.user_filter.replace("{username}", escape_filter_chars(username))
            service.search(
                self._config.user_base_dn,
                query,
                search_scope=SUBTREE,
                attributes=["cn", "displayName", "mail", "memberOf"],
                size_limit=2,
            )
            entries = list(service.entries)
            if len(entries) != 1:
                raise Unauthenticated(BAD_CREDENTIALS)
            dn = str(entries[0].entry_dn)
            person = self._person(service, dn, username, entries[0])
        finally:
            service.unbind()
        own = self._connect(dn, password)
        if own is None:
            raise Unauthenticated(BAD_CREDENTIALS)
        own.unbind()
        return person

    def _lookup(self, dn: str) -> Person | None:
        service = self._service()
        try:
            found = service.search(
                dn,
                "(objectClass=*)",
                search_scope=BASE,
                attributes=["cn", "displayName", "mail", "memberOf", "uid"],
            )
            if not found or not service.entries:
                return None
            entry = service.entries[0]
            return self._person(service, dn, _first(entry, "uid") or dn, entry)
        finally:
            service.unbind()

    def _person(self, service: Connection, dn: str, username: str, entry: Any) -> Person:
        return Person(
            subject=dn,
            username=username,
            display_name=_first(entry, "displayName") or _first(entry, "cn") or username,
            groups=tuple(self._groups(service, dn, entry)),
        )

    def _groups(self, service: Connection, dn: str, entry: Any) -> list[str]:
        attribute = self._config.group_name_attribute
        if self._config.group_base_dn:
            service.search(
                self._config.group_base_dn,
                self._config.group_filter.replace("{dn}", escape_filter_chars(dn)),
                search_scope=SUBTREE,
                attributes=[] if attribute == "dn" else [attribute],
            )
            if attribute == "dn":
                return [str(group.entry_dn) for group in service.entries]
            return [value for group in service.entries for value in _values(group, attribute)]
        names = _values(entry, "memberOf")
        return names if attribute == "dn" else [_rdn_value(n) for n in names]


def _values(entry: Any, attribute: str) -> list[str]:
    try:
        return [str(v) for v in entry[attribute].values]
    except (KeyError, LDAPException):
        return []


def _first(entry: Any, attribute: str) -> str:
    values = _values(entry, attribute)
    return values[0] if values else ""


def _rdn_value(dn: str) -> str:
    """`cn=nurses,ou=groups,...` -> `nurses`."""
    try:
        return str(parse_dn(dn)[0][1])
    except (LDAPException, IndexError):
        return dn
