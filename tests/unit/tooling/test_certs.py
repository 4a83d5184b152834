"""`hacs certs`: a CA, certificates that verify against it, rotation that keeps the CA."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509

from services.cli import main


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certificates_chain_to_the_ca_and_name_where_they_are_reached(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    assert (
        main(["certs", "--dir", str(out), "--names", "edge,search", "--dns", "hacs.example.org"])
        == 0
    )
    ca = load(out / "ca.pem")
    for name in ("edge", "search"):
        cert = load(out / f"{name}.pem")
        cert.verify_directly_issued_by(ca)  # raises when it does not chain
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert {"localhost", name, f"hacs-{name}", "hacs.example.org"} <= set(
            names.get_values_for_type(x509.DNSName)
        )
        assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
        assert stat.S_IMODE((out / f"{name}-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "ca-key.pem").stat().st_mode) == 0o600


def test_rotate_reissues_with_the_same_ca_and_plain_runs_keep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tls"
    assert main(["certs", "--dir", str(out), "--names", "edge"]) == 0
    ca_before, edge_before = (out / "ca.pem").read_bytes(), load(out / "edge.pem").serial_number
    assert main(["certs", "--dir", str(out), "--names", "edge"]) == 0
    assert load(out / "edge.pem").serial_number == edge_before
    assert "kept" in capsys.readouterr().out
    assert main(["certs", "--dir", str(out), "--names", "edge", "--rotate"]) == 0
    assert (out / "ca.pem").read_bytes() == ca_before
    rotated = load(out / "edge.pem")
    assert rotated.serial_number != edge_before
    rotated.verify_directly_issued_by(load(out / "ca.pem"))


def test_bad_requests_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "--dir", str(tmp_path / "none"), "--rotate"]) == 2
    assert "no CA" in capsys.readouterr().out
    assert main(["certs", "--dir", str(tmp_path / "x"), "--names", "../etc"]) == 2
    assert main(["certs", "--dir", str(tmp_path / "x"), "--days", "0"]) == 2
    assert not (tmp_path / "x").exists()
