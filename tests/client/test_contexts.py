"""The one client address (flag > LIVECALC_ADDRESS > current context > default), saved
contexts, unique-prefix matching, and int64 fields as JSON integers — without services."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from livecalc.data.v1 import data_pb2
from livecalc.gateway.v1 import job_pb2
from services.cli import main
from services.client.contexts import DEFAULT_ADDRESS, Config, Context, load_config, resolve_target, security_for
from services.client.report import job_document
from services.common.client import ChannelSecurity, as_dict, match_prefix, table
from services.common.errors import InvalidArgument, NotFound


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"LIVECALC_CONFIG": str(tmp_path / "config.json"), **extra}


def _save(tmp_path: Path, current: str | None, *contexts: Context) -> None:
    Config(tmp_path / "config.json", {c.name: c for c in contexts}, current).save()


def test_the_address_is_flag_then_environment_then_context_then_default(tmp_path: Path) -> None:
    assert resolve_target(None, _env(tmp_path)) == resolve_target(None, _env(tmp_path))
    assert resolve_target(None, _env(tmp_path)).address == DEFAULT_ADDRESS == "127.0.0.1:50051"
    _save(tmp_path, "prod", Context("prod", "gw.prod:443", token="t0k"), Context("dev", "gw.dev:50051"))
    assert resolve_target(None, _env(tmp_path)).address == "gw.prod:443"
    assert resolve_target(None, _env(tmp_path)).source == "context prod"
    by_env = resolve_target(None, _env(tmp_path, LIVECALC_ADDRESS="10.0.0.1:50051"))
    assert (by_env.address, by_env.source) == ("10.0.0.1:50051", "$LIVECALC_ADDRESS")
    by_flag = resolve_target("h:1", _env(tmp_path, LIVECALC_ADDRESS="10.0.0.1:50051"))
    assert (by_flag.address, by_flag.source) == ("h:1", "--address")


def test_a_contexts_token_goes_to_its_own_address_only(tmp_path: Path) -> None:
    _save(tmp_path, "prod", Context("prod", "gw.prod:443", token="t0k", tls_ca="/ca.pem"))
    none = ChannelSecurity()
    own = security_for(resolve_target(None, _env(tmp_path)), none)
    assert own.token == "t0k" and own.tls and own.tls_ca == Path("/ca.pem")
    assert security_for(resolve_target("gw.prod:443", _env(tmp_path)), none).token == "t0k"  # the same address
    elsewhere = security_for(resolve_target("evil:443", _env(tmp_path)), none)
    assert elsewhere.token is None and elsewhere.tls_ca is None  # never sent to another address
    env_elsewhere = security_for(resolve_target(None, _env(tmp_path, LIVECALC_ADDRESS="evil:443")), none)
    assert env_elsewhere.token is None
    given = security_for(resolve_target(None, _env(tmp_path)), ChannelSecurity(token="mine"))
    assert given.token == "mine"  # --token / LIVECALC_TOKEN win


def test_config_commands_write_a_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LIVECALC_CONFIG", str(tmp_path / "cfg" / "config.json"))
    monkeypatch.delenv("LIVECALC_ADDRESS", raising=False)
    assert main(["config", "set-context", "a", "--address", "h:1", "--token", "s3cret"]) == 0
    assert main(["config", "set-context", "b", "--address", "h:2", "--use"]) == 0
    assert main(["config", "set-context", "a", "--token", ""]) == 0  # only the options given change
    config = load_config({"LIVECALC_CONFIG": str(tmp_path / "cfg" / "config.json")})
    assert config.current == "b" and config.contexts["a"] == Context("a", "h:1")
    assert stat.S_IMODE((tmp_path / "cfg" / "config.json").stat().st_mode) == 0o600
    capsys.readouterr()
    assert main(["config", "get-contexts"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["CURRENT", "NAME", "ADDRESS", "TOKEN", "TLS-CA"]
    assert lines[2].split() == ["*", "b", "h:2", "-", "-"]
    assert main(["config", "use-context", "nope"]) == 1
    assert main(["config", "set-context", "new"]) == 1  # a new context needs its address
    (tmp_path / "cfg" / "config.json").write_text("{not json")
    assert main(["datasets", "list"]) == 1
    assert "is not valid" in capsys.readouterr().err


def test_a_prefix_names_one_id_or_says_why_not() -> None:
    ids = ["job-20261123-123304-23770c4a", "job-20261123-123305-12f2e43f", "job-20261124-090000-aaaa0000"]
    assert match_prefix("job-20261123-123304", ids, "job id") == ids[0]
    assert match_prefix(ids[1], ids, "job id") == ids[1]
    assert match_prefix("job-2026…0000", ids, "job id") == ids[2]  # START…END, as the README shortens
    assert match_prefix("job-2026...e43f", ids, "job id") == ids[1]
    with pytest.raises(InvalidArgument, match=r"matches 2 job ids: job-20261123-123304-23770c4a, job-2026"):
        match_prefix("job-20261123", ids, "job id")
    with pytest.raises(NotFound, match="no job id matches 'job-1999'"):
        match_prefix("job-1999", ids, "job id")
    with pytest.raises(NotFound):
        match_prefix("job-20261123-123304-23770c4a…c4a", ids, "job id")  # prefix and suffix may not overlap
    with pytest.raises(InvalidArgument):
        match_prefix("", ids, "job id")


def test_json_writes_64_bit_integers_as_integers() -> None:
    d = as_dict(data_pb2.Dataset(dataset_id="d", row_count=1 << 40, size_bytes=12))
    assert d["row_count"] == 1 << 40 and d["size_bytes"] == 12
    job = job_pb2.Job(job_id="j", state=job_pb2.JOB_STATE_RUNNING)
    job.progress.policies_done = 3
    job.create_time.FromSeconds(0)
    doc = job_document(job)
    assert list(doc) == [f.name for f in job_pb2.Job.DESCRIPTOR.fields]
    assert doc["progress"]["policies_done"] == 3 and doc["result"] is None and doc["error"] is None
    assert doc["create_time"] == "1970-01-01T00:00:00Z"  # well-known types keep their JSON form
    job.result.policy_count = 7
    job.result.outputs.add(name="net_cf", primary=True, values=[1.0])
    assert job_document(job)["result"]["policy_count"] == 7


def test_table_aligns_under_its_header() -> None:
    assert table([["A", "BB"], ["ccc", "d"]]) == "A    BB\nccc  d\n"
