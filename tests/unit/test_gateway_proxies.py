"""Client address resolution from X-Forwarded-For: believed only from trusted proxies,
read from the right, never a string the client chose."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from gateway.proxies import client_host, parse_address
from gateway.settings import GatewaySettings

PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        # An untrusted peer: the header is the client's own words.
        ("203.0.113.5", "198.51.100.1", "203.0.113.5"),
        ("127.0.0.1", "198.51.100.1", "127.0.0.1"),
        # A trusted peer: the right-most address that is not a trusted proxy.
        ("10.0.0.2", "198.51.100.1", "198.51.100.1"),
        ("10.0.0.2", "198.51.100.1, 10.9.9.9", "198.51.100.1"),
        ("10.0.0.2", "1.1.1.1, 2.2.2.2, 198.51.100.1, 10.9.9.9", "198.51.100.1"),
        ("10.0.0.2", "198.51.100.1:4711", "198.51.100.1"),
        ("10.0.0.2", "[2001:db9::7]:443, 2001:db8::1", "2001:db9::7"),
        ("10.0.0.2", "::ffff:198.51.100.1", "198.51.100.1"),
        ("::ffff:10.0.0.2", "198.51.100.1", "198.51.100.1"),
        # Nothing usable: the peer, never a string the client wrote.
        ("10.0.0.2", None, "10.0.0.2"),
        ("10.0.0.2", "", "10.0.0.2"),
        ("10.0.0.2", "unknown", "10.0.0.2"),
        ("10.0.0.2", "198.51.100.1, evil", "10.0.0.2"),
        ("10.0.0.2", "198.51.100.1,,10.9.9.9", "10.0.0.2"),
        # Every hop a trusted proxy: the farthest.
        ("10.0.0.2", "10.1.1.1, 10.9.9.9", "10.1.1.1"),
    ],
)
def test_the_client_is_the_rightmost_untrusted_hop_behind_a_trusted_peer(
    peer: str, forwarded: str | None, client: str
) -> None:
    assert client_host(peer, forwarded, PROXIES) == client


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_host("127.0.0.1", "198.51.100.1", []) == "127.0.0.1"


@pytest.mark.parametrize("text", ["x", "1.2.3", "1.2.3.4.5", "[::1", "01.2.3.4", " "])
def test_what_is_not_an_ip_address_is_none(text: str) -> None:
    assert parse_address(text) is None


def test_the_setting_reads_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_TRUSTED_PROXIES", " 10.0.0.0/8, 192.168.1.7 ,2001:db8::/32")
    settings = GatewaySettings(dev_mode=True)
    assert [str(n) for n in settings.trusted_proxies] == [
        "10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32"
    ]  # fmt: skip
    assert GatewaySettings(dev_mode=True, trusted_proxies="").trusted_proxies == []


def test_the_setting_is_empty_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORTICO_TRUSTED_PROXIES", raising=False)
    assert GatewaySettings(dev_mode=True).trusted_proxies == []


@pytest.mark.parametrize("value", ["*", "proxy.internal", "10.0.0.1/8", "10.0.0.0/33"])
def test_the_setting_refuses_what_is_not_an_address_or_network(value: str) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(dev_mode=True, trusted_proxies=value)
