"""Render the Helm chart's Envoy configs from the same template as every other edge.

Helm cannot run Jinja2, so the chart ships files rendered here by `mesh.envoy.render` for
the chart's topology: one headless Service per HACS service (`hacs-<service>:50051`,
resolved by DNS in the release namespace), the JWKS from the tenant pods, the admin socket
under the pod's `/tmp`. One variant per transport mode of the chart, each with this Envoy's
own token buckets or with the global rate-limit service (rateLimit.enabled):

    charts/hacs/files/envoy.yaml        plaintext (istio.enabled: Istio's sidecars carry
                                        mTLS); JWKS over http
    charts/hacs/files/envoy-tls.yaml    TLS at the edge and mTLS to every service
                                        (HACS_TLS=on, no Istio); JWKS over https
    charts/hacs/files/envoy-ratelimit.yaml
    charts/hacs/files/envoy-tls-ratelimit.yaml
                                        the same two asking the rate-limit service
                                        (`hacs-ratelimit:50051`, Envoy's RLS API; mTLS in
                                        the TLS one) instead of limiting on their own
    charts/hacs/files/envoy-sds/*.yaml  the TLS variants' file-based secrets (render_sds):
                                        which PEM files Envoy serves and trusts, reloaded
                                        when Kubernetes updates the mounted Secrets

`make lint` and `make deploy-check` fail when any of them is stale (`--check`).

The TLS variant's paths are the edge pod's (charts/hacs/templates/edge.yaml mounts them):
the ConfigMap `hacs-edge` at /etc/envoy (envoy.yaml and the SDS files), the edge's own
certificate Secret at /etc/hacs/tls (tls.crt, tls.key, ca.crt: cert-manager's format; the
client certificate Envoy presents to the services, and the CA it verifies them with), and
the certificate served to clients at /etc/hacs/edge-tls (edge.tls.secretName, else the
edge's own Secret mounted there a second time).

A few values vary per install; they are rendered as placeholders that the chart's ConfigMap
replaces (`charts/hacs/templates/edge.yaml`), and nothing else of the files does:

    __HACS_EDGE_CALLS_PER_MINUTE__        edge.callsPerMinute        (per tenant)
    __HACS_EDGE_TOKEN_CALLS_PER_MINUTE__  edge.tokenCallsPerMinute   (IssueToken, per client)
    __HACS_EDGE_OPEN_CALLS_PER_MINUTE__   edge.openCallsPerMinute    (other open methods)
    __HACS_EDGE_TRUSTED_PROXY_HOPS__      edge.trustedProxyHops      (load balancers in front)

(the first three in the local-bucket variants only: with the rate-limit service the limits
live in that service, which the chart gives edge.tokenCallsPerMinute and
edge.openCallsPerMinute as HACS_EDGE_TOKEN_/OPEN_CALLS_PER_MINUTE); in the TLS variants,
from edge.tls.clientCertificates (off, optional, require):

    __HACS_EDGE_REQUIRE_CLIENT_CERTIFICATE__  true for require, else false
    __HACS_EDGE_CLIENT_CA__                   prefixes the listener's client-CA line: ""
                                              (optional, require: clients are asked for a
                                              certificate) or "# " (off: the line becomes a
                                              comment, no certificate is asked for)

and in the rate-limit variants, from rateLimit.failureMode (open, closed):

    __HACS_RATELIMIT_FAILURE_MODE_DENY__      the ratelimit filter's failure_mode_deny:
                                              true for closed, else false

Generating checks that each filled variant parses to exactly what `render` gives for the
same values (every client-certificate mode of the TLS ones, both failure modes of the
rate-limit ones).

Per-tenant overrides of the limit are not a chart value (they need the template's loop):
a tenant's own limit is its plan's `calls_per_minute`, enforced by the services.

    python -m mesh.envoy.chart            # rewrite the files
    python -m mesh.envoy.chart --check    # exit 1 when one is stale (or one too many)
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from mesh.envoy.render import (
    DEFAULT_GRPC_PORT,
    HACS_SERVICES,
    EdgeSettings,
    EdgeTls,
    Upstream,
    _short_name,
    render,
    render_sds,
)

FILES = Path(__file__).resolve().parents[2] / "charts" / "hacs" / "files"
CHART_FILE = FILES / "envoy.yaml"
TLS_CHART_FILE = FILES / "envoy-tls.yaml"
RATELIMIT_CHART_FILE = FILES / "envoy-ratelimit.yaml"
TLS_RATELIMIT_CHART_FILE = FILES / "envoy-tls-ratelimit.yaml"
SDS_DIR = FILES / "envoy-sds"
HTTP_PORT = 9464
EDGE_PORT = 8080
# The rate-limit service's headless Service (charts/hacs/templates/services.yaml).
RATELIMIT_UPSTREAM = Upstream("hacs-ratelimit", DEFAULT_GRPC_PORT)

# Where the edge pod has its files (charts/hacs/templates/edge.yaml mounts them there).
CONFIG_DIR = "/etc/envoy"
TLS_DIR = "/etc/hacs/tls"
SERVER_TLS_DIR = "/etc/hacs/edge-tls"

# Sentinel numbers rendered in place of the per-install values, then swapped for
# placeholders; each occurs nowhere else in the config.
_SENTINELS: dict[str, int] = {
    "__HACS_EDGE_CALLS_PER_MINUTE__": 987_654_301,
    "__HACS_EDGE_TOKEN_CALLS_PER_MINUTE__": 987_654_302,
    "__HACS_EDGE_OPEN_CALLS_PER_MINUTE__": 987_654_303,
}
TRUSTED_HOPS = "__HACS_EDGE_TRUSTED_PROXY_HOPS__"
PLACEHOLDERS = (*_SENTINELS, TRUSTED_HOPS)
REQUIRE_CLIENT_CERTIFICATE = "__HACS_EDGE_REQUIRE_CLIENT_CERTIFICATE__"
CLIENT_CA = "__HACS_EDGE_CLIENT_CA__"
TLS_PLACEHOLDERS = (REQUIRE_CLIENT_CERTIFICATE, CLIENT_CA)
CLIENT_CERTIFICATE_MODES = ("off", "optional", "require")
FAILURE_MODE_DENY = "__HACS_RATELIMIT_FAILURE_MODE_DENY__"
RATELIMIT_PLACEHOLDERS = (FAILURE_MODE_DENY,)
FAILURE_MODES = ("open", "closed")


def service_host(service: str) -> str:
    """The Service the chart creates for `service`: `hacs-records`, `hacs-search`, ..."""
    return f"hacs-{_short_name(service)}"


def chart_tls(client_certificates: str = "off") -> EdgeTls:
    """The edge's TLS as the chart mounts it (cert-manager's key names)."""
    return EdgeTls(
        sds_dir=CONFIG_DIR,
        cert=f"{TLS_DIR}/tls.crt",
        key=f"{TLS_DIR}/tls.key",
        ca=f"{TLS_DIR}/ca.crt",
        client_certificates=client_certificates,
        server_cert=f"{SERVER_TLS_DIR}/tls.crt",
        server_key=f"{SERVER_TLS_DIR}/tls.key",
    )


def chart_settings(
    calls_per_minute: int = 987_654_301,
    token_calls_per_minute: int = 987_654_302,
    open_calls_per_minute: int = 987_654_303,
    trusted_proxy_hops: int = 0,
    tls: EdgeTls | None = None,
    ratelimit_failure_mode: str | None = None,
) -> EdgeSettings:
    """The edge as the chart deploys it (with the given per-install values); with a
    `ratelimit_failure_mode` it asks the rate-limit service (rateLimit.enabled)."""
    scheme = "https" if tls else "http"
    return EdgeSettings(
        upstreams={s: Upstream(service_host(s), DEFAULT_GRPC_PORT) for s in HACS_SERVICES},
        listen_host="0.0.0.0",
        listen_port=EDGE_PORT,
        admin_socket="/tmp/envoy-admin.sock",
        jwks_uri=f"{scheme}://{service_host(HACS_SERVICES[0])}:{HTTP_PORT}/.well-known/jwks.json",
        default_calls_per_minute=calls_per_minute,
        token_calls_per_minute=token_calls_per_minute,
        open_calls_per_minute=open_calls_per_minute,
        trusted_proxy_hops=trusted_proxy_hops,
        access_log_path="/dev/stdout",
        tls=tls,
        ratelimit=RATELIMIT_UPSTREAM if ratelimit_failure_mode else None,
        ratelimit_failure_mode=ratelimit_failure_mode or "open",
    )


def client_certificate_values(mode: str) -> dict[str, str]:
    """The TLS placeholders' values for edge.tls.clientCertificates = `mode`."""
    if mode not in CLIENT_CERTIFICATE_MODES:
        raise ValueError(f"client certificates must be off, optional or require, not {mode!r}")
    return {
        REQUIRE_CLIENT_CERTIFICATE: "true" if mode == "require" else "false",
        CLIENT_CA: "# " if mode == "off" else "",
    }


def failure_mode_values(mode: str) -> dict[str, str]:
    """The rate-limit placeholder's value for rateLimit.failureMode = `mode`."""
    if mode not in FAILURE_MODES:
        raise ValueError(f"the failure mode must be open or closed, not {mode!r}")
    return {FAILURE_MODE_DENY: "true" if mode == "closed" else "false"}


def fill(config: str, values: Mapping[str, object]) -> str:
    """What the chart does to a file: each placeholder in it replaced by its value."""
    for placeholder in (*PLACEHOLDERS, *TLS_PLACEHOLDERS, *RATELIMIT_PLACEHOLDERS):
        if placeholder in config:
            config = config.replace(placeholder, str(values[placeholder]))
    return config


def _with_placeholders(text: str, ratelimit: bool = False) -> str:
    for placeholder, sentinel in _SENTINELS.items():
        if ratelimit:
            # The limits live in the rate-limit service: the file must not carry them.
            if str(sentinel) in text:
                raise RuntimeError(f"{placeholder}: rendered although the service limits")
            continue
        if str(sentinel) not in text:
            raise RuntimeError(f"{placeholder}: the template no longer renders its value")
        text = text.replace(str(sentinel), placeholder)
    if ratelimit:
        # Rendered with failure mode "closed": its one failure_mode_deny becomes the value.
        text, count = re.subn(
            r"failure_mode_deny: true\b", f"failure_mode_deny: {FAILURE_MODE_DENY}", text
        )
        if count != 1:
            raise RuntimeError(f"expected one failure_mode_deny in the template, found {count}")
    text, count = re.subn(
        r"xff_num_trusted_hops: 0\b", f"xff_num_trusted_hops: {TRUSTED_HOPS}", text
    )
    if count != 1:
        raise RuntimeError(f"expected one xff_num_trusted_hops in the template, found {count}")
    return text


def _client_certificate_placeholders(text: str) -> str:
    """The `require` rendering, made to serve every mode (the listener's two lines)."""
    text, count = re.subn(
        r"require_client_certificate: true\b",
        f"require_client_certificate: {REQUIRE_CLIENT_CERTIFICATE}",
        text,
    )
    if count != 1:
        raise RuntimeError(f"expected one require_client_certificate, found {count}")
    # The listener's client CA: the first validation context after the downstream context
    # (the upstream clusters' come later, under combined_validation_context).
    start = text.index("DownstreamTlsContext")
    match = re.compile(r"\n( +)(validation_context_sds_secret_config: )").search(text, start)
    if match is None or "filters:" in text[start : match.start()]:
        raise RuntimeError("the listener's client-CA line is not where the generator expects")
    return text[: match.start(2)] + CLIENT_CA + text[match.start(2) :]


def chart_config(tls: bool = False, ratelimit: bool = False) -> str:
    """A file the chart ships: the rendered config with placeholders (checked to fill back
    into exactly what `render` gives)."""
    settings = chart_settings(
        tls=chart_tls("require") if tls else None,
        ratelimit_failure_mode="closed" if ratelimit else None,
    )
    text = _with_placeholders(render(settings), ratelimit=ratelimit)
    if tls:
        text = _client_certificate_placeholders(text)
    replaced = ", ".join(
        (
            *(PLACEHOLDERS if not ratelimit else (TRUSTED_HOPS,)),
            *(TLS_PLACEHOLDERS if tls else ()),
            *(RATELIMIT_PLACEHOLDERS if ratelimit else ()),
        )
    )
    header = (
        "# Generated by `python -m mesh.envoy.chart` from mesh/envoy/envoy.yaml.j2; do not edit.\n"
        f"# The chart replaces: {replaced}.\n"
    )
    for mode in CLIENT_CERTIFICATE_MODES if tls else ("off",):
        for failure_mode in FAILURE_MODES if ratelimit else (None,):
            values = {
                **dict(zip(PLACEHOLDERS, (900, 30, 60, 2), strict=True)),
                **client_certificate_values(mode),
                **failure_mode_values(failure_mode or "open"),
            }
            expected = chart_settings(
                900,
                30,
                60,
                2,
                tls=chart_tls(mode) if tls else None,
                ratelimit_failure_mode=failure_mode,
            )
            if yaml.safe_load(fill(text, values)) != yaml.safe_load(render(expected)):
                raise RuntimeError(
                    f"the chart's config does not fill back into render() ({mode}, "
                    f"failure mode {failure_mode})"
                )
    return header + text


def chart_sds() -> dict[str, str]:
    """The TLS variants' SDS files by name (the chart puts them next to envoy.yaml); the
    rate-limit variant names the same secrets (its RLS cluster presents the edge's own)."""
    header = "# Generated by `python -m mesh.envoy.chart` (mesh/envoy/render.py); do not edit.\n"
    sds = render_sds(chart_settings(tls=chart_tls()))
    if render_sds(chart_settings(tls=chart_tls(), ratelimit_failure_mode="open")) != sds:
        raise RuntimeError("the rate-limit variant would need SDS files of its own")
    return {Path(path).name: header + text for path, text in sds.items()}


def chart_files() -> dict[Path, str]:
    """Every file the chart ships from here, with its content."""
    files = {
        CHART_FILE: chart_config(),
        TLS_CHART_FILE: chart_config(tls=True),
        RATELIMIT_CHART_FILE: chart_config(ratelimit=True),
        TLS_RATELIMIT_CHART_FILE: chart_config(tls=True, ratelimit=True),
    }
    files.update({SDS_DIR / name: text for name, text in chart_sds().items()})
    return files


def stale(files: Mapping[Path, str]) -> list[Path]:
    """The files that differ from `files`, are missing, or are left over in SDS_DIR."""
    found = [p for p, text in files.items() if not p.exists() or p.read_text("utf-8") != text]
    extra = sorted(set(SDS_DIR.glob("*")) - set(files)) if SDS_DIR.exists() else []
    return found + extra


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mesh.envoy.chart",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a file is stale")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    wanted = chart_files()
    if args.check:
        bad = stale(wanted)
        for path in bad:
            print(
                f"{path} is stale: run `python -m mesh.envoy.chart` and commit the result",
                file=sys.stderr,
            )
        return 1 if bad else 0
    for path in stale(wanted):
        if path not in wanted:
            path.unlink()
            print(f"removed {path}")
    for path, text in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text("utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
