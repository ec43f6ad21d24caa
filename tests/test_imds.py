"""The IMDSv2 stand-in, for real: in a network namespace of our own, on 169.254.169.254:80.

Each test works in a namespace it creates (``erpt-imds-<random>``) and deletes in a finalizer,
also on failure; the server is stopped by its PID. The clients are the real ones: botocore's
credential chain (no credentials in the environment or in files), run inside the namespace;
the protocol checks use urllib there. pgBackRest 2.55 signing through it is checked on the
machines (``tests/test_machines.py``), never with the host's older pgBackRest.
The host's own namespace must never get 169.254.169.254.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localtarget.imds import (
    METADATA_ADDRESS,
    ImdsConfigError,
    ImdsError,
    add_metadata_address,
    load_config,
    ready_file_for,
    start_in_netns,
    stop_server,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
REGION = "eu-west-3"
ROLE = "erp-instance-acme"


@contextlib.contextmanager
def own_netns() -> Iterator[str]:
    """A network namespace created here and deleted afterwards, whatever happens."""
    name = f"erpt-imds-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, timeout=30)
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert name not in listed.split(), f"network namespace {name} was not deleted"


def config_document(**overrides: str) -> dict[str, str]:
    document = {
        "instance_id": "i-0" + secrets.token_hex(8),
        "region": REGION,
        "availability_zone": f"{REGION}c",
        "role_name": ROLE,
        "access_key_id": "AKIA" + secrets.token_hex(8).upper(),
        "secret_access_key": "imds-test-secret-" + secrets.token_urlsafe(24),
        "local_ipv4": "10.20.30.40",
        "hostname": "ip-10-20-30-40.eu-west-3.compute.internal",
    }
    document.update(overrides)
    return document


def write_config(path: Path, document: dict[str, str], mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    path.chmod(mode)
    return path


def netns_env(scratch: Path) -> dict[str, str]:
    """No AWS credentials or config anywhere, no proxy: only IMDS can answer."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "PGBACKREST_"))
        and key.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    }
    env["AWS_CONFIG_FILE"] = str(scratch / "nonexistent" / "config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(scratch / "nonexistent" / "credentials")
    env["HOME"] = str(scratch / "nonexistent")
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def run_in_netns(
    netns: str, code: str, *args: str, env: dict[str, str], timeout: float = 120
) -> Any:
    """Run ``code`` with this interpreter inside ``netns``; its last stdout line, as JSON."""
    result = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", code, *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"in {netns}: rc {result.returncode}\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@dataclass
class Served:
    netns: str
    document: dict[str, str]
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    scratch: Path

    @property
    def env(self) -> dict[str, str]:
        return netns_env(self.scratch)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    scratch = tmp_path_factory.mktemp("imds")
    document = config_document()
    config_path = write_config(scratch / "imds.json", document)
    log_path = scratch / "imds.log"
    with own_netns() as netns:
        add_metadata_address(netns)
        process = start_in_netns(netns, config_path, log_path)
        try:
            yield Served(netns, document, config_path, log_path, process, scratch)
        finally:
            stop_server(process)


# urllib inside the namespace: each step is [method, path, headers]; "{token}" in a header is
# the last token a PUT returned; ["SLEEP", seconds, {}] waits.
PROBE = r"""
import json, sys, time, urllib.error, urllib.request
results, token = [], ""
for method, path, headers in json.loads(sys.argv[1]):
    if method == "SLEEP":
        time.sleep(float(path)); results.append(None); continue
    headers = {key: value.replace("{token}", token) for key, value in headers.items()}
    request = urllib.request.Request("http://169.254.169.254" + path, method=method,
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body, got = response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as error:
        status, body, got = error.code, error.read().decode(), error.headers
    if method == "PUT" and status == 200:
        token = body
    results.append([status, body, {k.lower(): v for k, v in got.items()}])
print(json.dumps(results))
"""

TTL = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN = {"X-aws-ec2-metadata-token": "{token}"}


def probe(served: Served, steps: list[list[Any]]) -> list[Any]:
    return list(run_in_netns(served.netns, PROBE, json.dumps(steps), env=served.env))


# botocore's own credential chain inside the namespace: what the AWS CLI and boto3 do.
BOTOCORE = r"""
import json
import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.utils import IMDSRegionProvider

session = botocore.session.Session()
credentials = session.get_credentials()
if credentials is None:
    print(json.dumps(None)); raise SystemExit
frozen = credentials.get_frozen_credentials()
request = AWSRequest(method="GET", url="https://s3.eu-west-3.amazonaws.com/bucket")
SigV4Auth(frozen, "s3", "eu-west-3").add_auth(request)
print(json.dumps({
    "method": credentials.method,
    "access_key": frozen.access_key,
    "secret_key": frozen.secret_key,
    "token": frozen.token,
    "expiry": credentials._expiry_time.isoformat(),
    "signed_with_token": "X-Amz-Security-Token" in request.headers,
    "signed_token": request.headers.get("X-Amz-Security-Token"),
    "region": IMDSRegionProvider(session).provide(),
}))
"""


def test_address_only_in_our_namespace(served: Served) -> None:
    host = subprocess.run(["ip", "-br", "addr"], capture_output=True, text=True, check=True)
    assert METADATA_ADDRESS not in host.stdout, host.stdout
    inside = subprocess.run(
        ["ip", "-n", served.netns, "-br", "addr", "show", "dev", "lo"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"{METADATA_ADDRESS}/32" in inside.stdout


def test_add_metadata_address_is_idempotent(served: Served) -> None:
    add_metadata_address(served.netns)
    add_metadata_address(served.netns)
    inside = subprocess.run(
        ["ip", "-n", served.netns, "-j", "addr", "show", "dev", "lo"],
        capture_output=True,
        text=True,
        check=True,
    )
    locals_ = [info["local"] for link in json.loads(inside.stdout) for info in link["addr_info"]]
    assert locals_.count(METADATA_ADDRESS) == 1
    assert "UP" in json.loads(inside.stdout)[0]["flags"]


def test_botocore_gets_the_role_credentials(served: Served) -> None:
    got = run_in_netns(served.netns, BOTOCORE, env=served.env)
    assert got is not None, "botocore found no credentials"
    assert got["method"] == "iam-role"
    assert got["access_key"] == served.document["access_key_id"]
    assert got["secret_key"] == served.document["secret_access_key"]
    # No session token configured: Token is "", and botocore signs without the header.
    assert got["token"] == ""
    assert got["signed_with_token"] is False
    assert got["region"] == REGION
    ahead = dt.datetime.fromisoformat(got["expiry"]) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=5, minutes=55) < ahead <= dt.timedelta(hours=6)


def test_imdsv2_protocol(served: Served) -> None:
    doc = served.document
    creds_path = f"/latest/meta-data/iam/security-credentials/{ROLE}"
    steps: list[list[Any]] = [
        ["GET", "/latest/meta-data/placement/region", {}],  # 0: no token
        ["PUT", "/latest/api/token", {TTL: "0"}],  # 1
        ["PUT", "/latest/api/token", {TTL: "21601"}],  # 2
        ["PUT", "/latest/api/token", {TTL: "abc"}],  # 3
        ["PUT", "/latest/api/token", {}],  # 4: no TTL header
        ["GET", "/latest/meta-data/placement/region", {"X-aws-ec2-metadata-token": "forged"}],
        ["PUT", "/latest/api/token", {TTL: "21600"}],  # 6
        ["GET", "/latest/meta-data/placement/region", TOKEN],  # 7
        ["GET", "/latest/meta-data/iam/security-credentials/", TOKEN],  # 8
        ["GET", "/latest/meta-data/iam/security-credentials", TOKEN],  # 9 (pgBackRest's form)
        ["GET", creds_path, TOKEN],  # 10
        ["GET", "/latest/meta-data/iam/security-credentials/other-role", TOKEN],  # 11
        ["GET", "/latest/meta-data/placement/availability-zone/", TOKEN],  # 12 (botocore's)
        ["GET", "/latest/meta-data/instance-id", TOKEN],  # 13
        ["GET", "/latest/meta-data/local-ipv4", TOKEN],  # 14
        ["GET", "/latest/meta-data/hostname", TOKEN],  # 15
        ["GET", "/latest/dynamic/instance-identity/document", TOKEN],  # 16
        ["GET", "/latest/meta-data/", TOKEN],  # 17
        ["GET", "/latest/meta-data", TOKEN],  # 18
        ["GET", "/latest/meta-data/no-such-thing", TOKEN],  # 19
        ["PUT", "/latest/api/token", {TTL: "1", "X-Forwarded-For": "10.0.0.1"}],  # 20
        ["GET", "/latest/api/token", TOKEN],  # 21
        ["PUT", "/latest/api/token", {TTL: "1"}],  # 22: a token that lives one second
        ["GET", "/latest/meta-data/instance-id", TOKEN],  # 23
        ["SLEEP", "1.5", {}],  # 24
        ["GET", "/latest/meta-data/instance-id", TOKEN],  # 25: expired
    ]
    r = probe(served, steps)
    assert r[0][0] == 401
    assert [r[i][0] for i in (1, 2, 3, 4)] == [400, 400, 400, 400]
    assert r[5][0] == 401
    assert r[6][0] == 200 and len(r[6][1]) >= 40
    assert r[6][2]["x-aws-ec2-metadata-token-ttl-seconds"] == "21600"
    assert r[7][:2] == [200, REGION]
    assert r[8][:2] == [200, ROLE]
    assert r[9][:2] == [200, ROLE]
    assert r[10][0] == 200
    creds = json.loads(r[10][1])
    assert creds["Code"] == "Success" and creds["Type"] == "AWS-HMAC"
    assert creds["AccessKeyId"] == doc["access_key_id"]
    assert creds["SecretAccessKey"] == doc["secret_access_key"]
    assert creds["Token"] == ""
    expiration = dt.datetime.strptime(creds["Expiration"], "%Y-%m-%dT%H:%M:%SZ")
    updated = dt.datetime.strptime(creds["LastUpdated"], "%Y-%m-%dT%H:%M:%SZ")
    assert expiration - updated == dt.timedelta(hours=6)
    assert r[11][0] == 404
    assert r[12][:2] == [200, f"{REGION}c"]
    assert r[13][:2] == [200, doc["instance_id"]]
    assert r[14][:2] == [200, doc["local_ipv4"]]
    assert r[15][:2] == [200, doc["hostname"]]
    identity = json.loads(r[16][1])
    assert identity["region"] == REGION
    assert identity["instanceId"] == doc["instance_id"]
    assert identity["availabilityZone"] == f"{REGION}c"
    assert identity["privateIp"] == doc["local_ipv4"]
    assert identity["accountId"] == "123456789012"
    assert r[17][0] == r[18][0] == 200 and r[17][1] == r[18][1]
    listing = r[17][1].splitlines()
    assert {"instance-id", "local-ipv4", "hostname", "iam/", "placement/"} <= set(listing)
    assert r[19][0] == 404
    assert r[20][0] == 403
    assert r[21][0] == 405
    assert r[22][0] == 200 and r[23][:2] == [200, doc["instance_id"]]
    assert r[25][0] == 401


def test_log_holds_no_secret(served: Served) -> None:
    steps = [
        ["PUT", "/latest/api/token", {TTL: "60"}],
        ["GET", f"/latest/meta-data/iam/security-credentials/{ROLE}", TOKEN],
    ]
    results = probe(served, steps)
    token = results[0][1]
    assert results[1][0] == 200
    log = served.log_path.read_text()
    assert f"GET /latest/meta-data/iam/security-credentials/{ROLE} 200" in log
    assert served.document["secret_access_key"] not in log
    assert token not in log
    for line in log.splitlines():
        assert "X-aws-ec2-metadata-token" not in line


def test_refuses_a_config_others_can_read(tmp_path: Path, served: Served) -> None:
    document = config_document()
    bad = write_config(tmp_path / "open.json", document, mode=0o644)
    with pytest.raises(ImdsConfigError, match="0644"):
        load_config(bad)
    # The server itself refuses too, before binding anything (loopback, any port).
    ready = tmp_path / "ready"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "localtarget.imds", "--config", str(bad)),
            *("--address", "127.0.0.1", "--port", "0", "--ready-file", str(ready)),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "0644" in result.stderr and "chmod 600" in result.stderr
    assert document["secret_access_key"] not in result.stderr + result.stdout
    assert not ready.exists()
    with pytest.raises(ImdsConfigError, match="0644"):
        start_in_netns(served.netns, bad, tmp_path / "never.log")
    # An invalid document is refused without echoing its values.
    invalid = write_config(tmp_path / "invalid.json", {**document, "availability_zone": "x"})
    with pytest.raises(ImdsConfigError, match="availability_zone") as caught:
        load_config(invalid)
    assert document["secret_access_key"] not in str(caught.value)


def test_session_token_and_sigterm(tmp_path: Path) -> None:
    """With a session token botocore signs with it; SIGTERM ends the server with 0."""
    session_token = "FwoGZXIvYXdzE" + secrets.token_urlsafe(48)
    document = config_document(
        access_key_id="ASIA" + secrets.token_hex(8).upper(), session_token=session_token
    )
    config_path = write_config(tmp_path / "imds.json", document)
    log_path = tmp_path / "imds.log"
    with own_netns() as netns:
        add_metadata_address(netns)
        process = start_in_netns(netns, config_path, log_path)
        try:
            assert Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")[1:3] == [
                b"-m",
                b"localtarget.imds",
            ], "the PID returned must be the server's own (ip netns exec execs it)"
            got = run_in_netns(netns, BOTOCORE, env=netns_env(tmp_path))
            assert got["method"] == "iam-role"
            assert got["access_key"] == document["access_key_id"]
            assert got["token"] == session_token
            assert got["signed_with_token"] is True and got["signed_token"] == session_token
        finally:
            code = stop_server(process)
        assert code == 0, log_path.read_text()
        assert not ready_file_for(log_path).exists()
        log = log_path.read_text()
        assert "stopped" in log
        assert session_token not in log and document["secret_access_key"] not in log


def test_launcher_errors_are_clear(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "imds.json", config_document())
    with pytest.raises(ImdsError, match="does not exist"):
        add_metadata_address(f"erpt-imds-missing-{secrets.token_hex(4)}")
    with own_netns() as netns:
        with pytest.raises(ImdsError, match="add_metadata_address"):
            start_in_netns(netns, config_path, tmp_path / "imds.log")
        add_metadata_address(netns)
        # No time to get ready: the process is killed and the error says so.
        with pytest.raises(ImdsError, match="did not listen") as caught:
            start_in_netns(netns, config_path, tmp_path / "slow.log", timeout=0)
        assert "killed" in str(caught.value)
        leftovers = [
            proc.name
            for proc in Path("/proc").iterdir()
            if proc.name.isdigit() and str(config_path).encode() in _cmdline(proc / "cmdline")
        ]
        assert leftovers == [], f"server processes left running: {leftovers}"


def _cmdline(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
