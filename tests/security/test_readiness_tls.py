"""`wait_serving` sees a service that serves TLS, and only with roots that trust its certificate.

`livecalc up`, the benches and the tests wait for each service with `wait_serving`; a service
started with `--tls-cert/--tls-key` answers TLS only, so a plaintext probe must end in a clear
timeout rather than hang or report it serving.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from services.common.client import ChannelSecurity
from services.common.errors import Unavailable
from services.common.readiness import wait_serving
from tests.security import keys
from tests.support import start_service


def test_wait_serving_probes_a_tls_server(tmp_path: Path) -> None:
    cert, key = keys.self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    other_cert, _ = keys.self_signed(tmp_path / "other")
    service = start_service(
        "data",
        tmp_path,
        extra=["--tls-cert", str(cert), "--tls-key", str(key), "--root", str(tmp_path / "datasets")],
        wait=False,
    )
    trusted = ChannelSecurity(tls_ca=cert)
    try:
        # Started, not yet serving: the probe waits through start-up, then returns.
        wait_serving(service.address, timeout=60, proc=service.proc, label="data", security=trusted)

        started = time.monotonic()
        with pytest.raises(
            Unavailable, match=r"^data at .* was not ready after 3s \(probed in plaintext; last error: "
        ):
            wait_serving(service.address, timeout=3, proc=service.proc, label="data")
        assert time.monotonic() - started >= 3, "a plaintext probe never sees the TLS server serve"

        # TLS that does not trust the server's certificate fails the handshake the same way.
        with pytest.raises(Unavailable, match=r"was not ready after 2s \(probed with TLS; last error: "):
            wait_serving(service.address, timeout=2, label="data", security=ChannelSecurity(tls_ca=other_cert))

        # The service served all along: the trusted probe answers at once.
        assert service.proc.poll() is None, service.log()
        started = time.monotonic()
        wait_serving(service.address, timeout=10, proc=service.proc, label="data", security=trusted)
        assert time.monotonic() - started < 5
    finally:
        service.kill()
