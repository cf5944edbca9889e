"""``python app.py`` honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT when no flag is given."""

from __future__ import annotations

import pytest

from app.cli import DEFAULT_HOST, DEFAULT_PORT, build_parser


def test_defaults_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    args = build_parser().parse_args([])
    assert (args.host, args.port) == (DEFAULT_HOST, DEFAULT_PORT) == ("127.0.0.1", 7860)


def test_environment_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "8080")
    args = build_parser().parse_args([])
    assert (args.host, args.port) == ("0.0.0.0", 8080)
    args = build_parser().parse_args(["--host", "127.0.0.1", "--port", "9000"])
    assert (args.host, args.port) == ("127.0.0.1", 9000)


@pytest.mark.parametrize("value", ["abc", "0", "70000"])
def test_bad_port_in_environment_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, value: str
) -> None:
    monkeypatch.setenv("GRADIO_SERVER_PORT", value)
    with pytest.raises(SystemExit):
        build_parser().parse_args([])
    assert "port must be" in capsys.readouterr().err
