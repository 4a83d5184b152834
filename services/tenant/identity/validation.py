"""Validators for the identity RPCs of TenantService (registered on import)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from cryptography import x509
from defusedxml import ElementTree
from hacs.tenant.v1 import identity_pb2 as pb

from services.common import names
from services.common.permissions import ROLES, is_valid_permission
from services.common.settings import is_loopback
from services.common.validation import Violations, validates
from services.tenant.identity.admin import UPDATABLE_FIELDS
from services.tenant.identity.oidc import TOKEN_TYPES, issuer_problem
from services.tenant.identity.providers import SECRET_REF

NAME = "tenants/{tenant}/identityProviders/{identity_provider}"
MAX_TTL = 24 * 3600
SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,100}\Z")  # RFC 6749 scope-token
ATTRIBUTE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}\Z")
SECRET_RULE = "must be a reference, 'env:NAME' or 'file:/path', never the secret itself"


def _provider(v: Violations, p: pb.IdentityProvider, paths: set[str] | None) -> None:
    """Check `p`'s fields (only those in `paths` for an update)."""

    def wanted(field: str) -> bool:
        return paths is None or field in paths

    prefix = "identity_provider"
    if wanted("display_name") and v.required(f"{prefix}.display_name", p.display_name):
        v.max_length(f"{prefix}.display_name", p.display_name, 200)
    kind = p.WhichOneof("config")
    if paths is None and kind is None:
        v.add(f"{prefix}.config", "set one of oidc, ldap or saml")
    for each in ("oidc", "ldap", "saml"):
        if paths is not None and each in paths and kind != each:
            v.add(f"{prefix}.{each}", f"the mask names {each} but the provider sets {kind}")
    if kind == "oidc" and wanted("oidc"):
        _oidc(v, f"{prefix}.oidc", p.oidc)
    if kind == "ldap" and wanted("ldap"):
        _ldap(v, f"{prefix}.ldap", p.ldap)
    if kind == "saml" and wanted("saml"):
        _saml(v, f"{prefix}.saml", p.saml)
    if wanted("role_mappings"):
        if len(p.role_mappings) > 100:
            v.add(f"{prefix}.role_mappings", "at most 100 mappings")
        for i, mapping in enumerate(p.role_mappings):
            where = f"{prefix}.role_mappings[{i}]"
            if v.required(f"{where}.group", mapping.group):
                v.max_length(f"{where}.group", mapping.group, 400)
            v.one_of(f"{where}.role", mapping.role, ROLES)
            for j, permission in enumerate(mapping.permissions):
                if not is_valid_permission(permission):
                    v.add(f"{where}.permissions[{j}]", f"{permission!r} is not 'action:resource'")
    if wanted("allowed_groups"):
        if len(p.allowed_groups) > 100:
            v.add(f"{prefix}.allowed_groups", "at most 100 groups")
        for i, group in enumerate(p.allowed_groups):
            if v.required(f"{prefix}.allowed_groups[{i}]", group):
                v.max_length(f"{prefix}.allowed_groups[{i}]", group, 400)


def _oidc(v: Violations, where: str, c: pb.OidcProvider) -> None:
    if v.required(f"{where}.issuer", c.issuer):
        v.max_length(f"{where}.issuer", c.issuer, 400)
        problem = issuer_problem(c.issuer)
        if problem:
            v.add(f"{where}.issuer", f"{c.issuer!r} {problem}")
    if v.required(f"{where}.client_id", c.client_id):
        v.max_length(f"{where}.client_id", c.client_id, 200)
    if c.client_secret_ref and not SECRET_REF.match(c.client_secret_ref):
        v.add(f"{where}.client_secret_ref", SECRET_RULE)
    if len(c.audiences) > 20:
        v.add(f"{where}.audiences", "at most 20 audiences")
    for i, audience in enumerate(c.audiences):
        if v.required(f"{where}.audiences[{i}]", audience):
            v.max_length(f"{where}.audiences[{i}]", audience, 400)
    v.max_length(f"{where}.groups_claim", c.groups_claim, 100)
    v.max_length(f"{where}.username_claim", c.username_claim, 100)
    if c.redirect_uri:
        _web_url(v, f"{where}.redirect_uri", c.redirect_uri)
    _return_urls(v, f"{where}.return_urls", list(c.return_urls))
    if c.scopes and "openid" not in c.scopes:
        v.add(f"{where}.scopes", "must include openid")
    for i, scope in enumerate(c.scopes):
        if not SCOPE.match(scope):
            v.add(f"{where}.scopes[{i}]", f"{scope!r} is not an OAuth scope")


def _web_url(v: Violations, where: str, url: str) -> None:
    """An https URL (http only on loopback) without a fragment."""
    v.max_length(where, url, 1000)
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.fragment:
        v.add(where, f"{url!r} is not an https:// URL without a fragment")
    elif parts.scheme == "http" and not is_loopback(parts.hostname):
        v.add(where, f"{url!r} must be https (plain http only on this host)")


def _return_urls(v: Violations, where: str, urls: list[str]) -> None:
    if len(urls) > 20:
        v.add(where, "at most 20 return URLs")
    for i, url in enumerate(urls):
        _web_url(v, f"{where}[{i}]", url)


def _ldap(v: Violations, where: str, c: pb.LdapProvider) -> None:
    url = urlsplit(c.url)
    if v.required(f"{where}.url", c.url):
        if url.scheme not in ("ldap", "ldaps") or not url.hostname or url.path not in ("", "/"):
            v.add(f"{where}.url", f"{c.url!r} is not ldaps://host[:port] or ldap://host[:port]")
        elif url.scheme == "ldap" and not c.start_tls and not is_loopback(url.hostname):
            v.add(
                f"{where}.start_tls",
                "plain ldap:// would send passwords in the clear: use ldaps:// or start_tls",
            )
    if c.ca_certificate_pem:
        try:
            x509.load_pem_x509_certificates(c.ca_certificate_pem.encode())
        except ValueError:
            v.add(f"{where}.ca_certificate_pem", "is not a PEM certificate")
    v.required(f"{where}.bind_dn", c.bind_dn)
    if v.required(f"{where}.bind_password_ref", c.bind_password_ref) and not SECRET_REF.match(
        c.bind_password_ref
    ):
        v.add(f"{where}.bind_password_ref", SECRET_RULE)
    v.required(f"{where}.user_base_dn", c.user_base_dn)
    filter_ok = "{username}" in c.user_filter and _parenthesised(c.user_filter)
    if v.required(f"{where}.user_filter", c.user_filter) and not filter_ok:
        v.add(f"{where}.user_filter", "must be an LDAP filter naming {username}")
    if c.group_filter and ("{dn}" not in c.group_filter or not _parenthesised(c.group_filter)):
        v.add(f"{where}.group_filter", "must be an LDAP filter naming {dn}")
    if c.group_name_attribute and not (
        c.group_name_attribute == "dn" or ATTRIBUTE.match(c.group_name_attribute)
    ):
        v.add(f"{where}.group_name_attribute", "must be an attribute name or 'dn'")
    if c.sync_interval_seconds and not 30 <= c.sync_interval_seconds <= 86_400:
        v.add(f"{where}.sync_interval_seconds", "must be 0 (300) or between 30 and 86400")
    for field in ("bind_dn", "user_base_dn", "group_base_dn", "user_filter", "group_filter"):
        v.max_length(f"{where}.{field}", getattr(c, field), 1000)


def _saml(v: Violations, where: str, c: pb.SamlProvider) -> None:
    if v.required(f"{where}.idp_metadata_xml", c.idp_metadata_xml):
        v.max_length(f"{where}.idp_metadata_xml", c.idp_metadata_xml, 1_000_000)
        try:
            root = ElementTree.fromstring(c.idp_metadata_xml)
        except Exception:  # defusedxml refuses entities and malformed XML alike
            v.add(f"{where}.idp_metadata_xml", "is not well-formed XML (or holds entities)")
        else:
            if not str(root.tag).endswith("EntityDescriptor"):
                v.add(f"{where}.idp_metadata_xml", "is not a SAML EntityDescriptor")
    v.max_length(f"{where}.groups_attribute", c.groups_attribute, 400)
    v.max_length(f"{where}.username_attribute", c.username_attribute, 400)
    if v.required(f"{where}.sp_entity_id", c.sp_entity_id):
        v.max_length(f"{where}.sp_entity_id", c.sp_entity_id, 1000)
    if v.required(f"{where}.acs_url", c.acs_url):
        _web_url(v, f"{where}.acs_url", c.acs_url)
    _return_urls(v, f"{where}.return_urls", list(c.return_urls))


def _parenthesised(text: str) -> bool:
    return text.startswith("(") and text.endswith(")") and text.count("(") == text.count(")")


def _token_fields(v: Violations, ttl_seconds: int, scopes: list[str]) -> None:
    if not 0 <= ttl_seconds <= MAX_TTL:
        v.add("ttl_seconds", f"must be between 0 (server default) and {MAX_TTL}")
    for i, scope in enumerate(scopes):
        if not is_valid_permission(scope):
            v.add(f"scopes[{i}]", f"{scope!r} is not 'action:resource'")


@validates(pb.CreateIdentityProviderRequest)
def _create(r: pb.CreateIdentityProviderRequest, v: Violations) -> None:
    v.resource_name("parent", r.parent, names.TENANT, "tenants/{tenant}")
    v.identifier("identity_provider_id", r.identity_provider_id)
    _provider(v, r.identity_provider, None)


@validates(pb.GetIdentityProviderRequest)
def _get(r: pb.GetIdentityProviderRequest, v: Violations) -> None:
    v.resource_name("name", r.name, names.IDENTITY_PROVIDER, NAME)


@validates(pb.ListIdentityProvidersRequest)
def _list(r: pb.ListIdentityProvidersRequest, v: Violations) -> None:
    v.resource_name("parent", r.parent, names.TENANT, "tenants/{tenant}")
    v.page(r.page_size)


@validates(pb.UpdateIdentityProviderRequest)
def _update(r: pb.UpdateIdentityProviderRequest, v: Violations) -> None:
    v.resource_name(
        "identity_provider.name", r.identity_provider.name, names.IDENTITY_PROVIDER, NAME
    )
    v.update_mask(r.update_mask, UPDATABLE_FIELDS)
    _provider(v, r.identity_provider, set(r.update_mask.paths))


@validates(pb.DeleteIdentityProviderRequest)
def _delete(r: pb.DeleteIdentityProviderRequest, v: Violations) -> None:
    v.resource_name("name", r.name, names.IDENTITY_PROVIDER, NAME)


@validates(pb.ExchangeTokenRequest)
def _exchange(r: pb.ExchangeTokenRequest, v: Violations) -> None:
    v.resource_name("identity_provider", r.identity_provider, names.IDENTITY_PROVIDER, NAME)
    if v.required("subject_token", r.subject_token):
        v.max_length("subject_token", r.subject_token, 16_384)
    v.one_of("subject_token_type", r.subject_token_type, TOKEN_TYPES)
    _token_fields(v, r.ttl_seconds, list(r.scopes))


@validates(pb.SignInWithPasswordRequest)
def _password(r: pb.SignInWithPasswordRequest, v: Violations) -> None:
    v.resource_name("identity_provider", r.identity_provider, names.IDENTITY_PROVIDER, NAME)
    if v.required("username", r.username):
        v.max_length("username", r.username, 256)
    if v.required("password", r.password):
        v.max_length("password", r.password, 1024)
    _token_fields(v, r.ttl_seconds, list(r.scopes))
