"""`hacs certs`: a development CA and a TLS certificate per component.

    hacs certs [--dir DIR] [--names edge,tenant,...] [--dns NAME ...] [--days N] [--rotate]

Writes to DIR (default `$HACS_DATA_DIR/tls`) what services/common/runtime/certificates.py
describes; `--rotate` re-issues the named certificates (new keys) with the existing CA,
and running processes pick them up without a restart.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from services.common.runtime.certificates import DEFAULT_NAMES, CertificateAuthority

HELP = "create a development CA and a TLS certificate per component"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=None, help="where to write (default: $HACS_DATA_DIR/tls)")
    parser.add_argument(
        "--names",
        default=",".join(DEFAULT_NAMES),
        help="comma-separated certificate names (default: the edge, each service, serve, client)",
    )
    parser.add_argument(
        "--dns",
        action="append",
        default=[],
        help="an extra DNS name or IP every certificate carries (repeatable)",
    )
    parser.add_argument("--days", type=int, default=825, help="validity of each certificate")
    parser.add_argument(
        "--rotate",
        action="store_true",
        help="re-issue every named certificate (new keys) with the existing CA",
    )


def run(args: argparse.Namespace, data_dir: Path) -> int:
    directory = Path(args.dir).expanduser() if args.dir else data_dir / "tls"
    names = tuple(n.strip() for n in args.names.split(",") if n.strip())
    bad = [n for n in names if not n.replace("-", "").isalnum()]
    if bad or not names:
        print(f"error: certificate names must be letters, digits and '-': {bad or 'none'}")
        return 2
    if args.days < 1:
        print("error: --days must be at least 1")
        return 2
    ca = CertificateAuthority(directory)
    if not ca.exists:
        if args.rotate:
            print(f"error: no CA in {directory} to rotate with; run `hacs certs` first")
            return 2
        ca.create()
        print(f"created the CA {ca.cert_path}")
    for name in names:
        present = (directory / f"{name}.pem").exists()
        if present and not args.rotate:
            print(f"kept   {directory / name}.pem (use --rotate to re-issue)")
            continue
        issued = ca.issue(name, tuple(args.dns), args.days)
        print(f"{'rotated' if present else 'issued '} {issued.cert}")
    return 0
