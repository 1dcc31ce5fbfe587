"""Resources end to end through the real `conjure` entry point: upload, ls, cp, rm and
--mount against the real stack, first on the local store, then on a stack whose store
is S3 (moto_server), mounting a bucket that is not the store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from conjure.infra.config import Settings
from tests import emulators
from tests.cli.test_run_e2e import run_id_of
from tests.conftest import conjure, running_stack, stack_env


def test_upload_mount_cache_and_writes(conjure_stack: Settings, tmp_path: Path) -> None:
    data = tmp_path / "src" / "mnist"
    proj = tmp_path / "proj"
    proj.mkdir()
    (data / "train").mkdir(parents=True)
    (data / "train" / "a.txt").write_text("first\n")
    (data / "labels.csv").write_text("1,2\n")
    up = conjure("upload", str(data), "--json")
    assert up.code == 0, up
    info = json.loads(up.out)
    assert info["resource"] == "uploads/mnist" and info["files"] == 2 and info["bytes"] == 10
    human = conjure("upload", str(data / "labels.csv"), "mnist-labels.csv")
    assert human.code == 0, human
    assert "Uploaded uploads/mnist-labels.csv: 1 file(s), 4 B" in human.err
    ls = conjure("ls", "uploads", "--json")
    assert {(e["path"], e["dir"]) for e in json.loads(ls.out)} >= {
        ("uploads/mnist", True),
        ("uploads/mnist-labels.csv", False),
    }, ls
    root = conjure("ls", "/")
    assert "uploads/" in root.out and "logs" not in root.out, root

    cmd = (
        "cat /mnt/data/train/a.txt && echo more >> /mnt/data/train/a.txt && "
        "echo made > /mnt/data/new.txt && cat mnist/labels.csv"
    )
    r1 = conjure(
        "run", "--mount", "uploads/mnist:/mnt/data", "--mount", "uploads/mnist", cmd, cwd=proj
    )
    assert r1.code == 0, r1
    assert r1.out == "first\n1,2\n", r1
    assert "uploads/mnist: downloaded" in r1.err, r1
    n1 = run_id_of(r1.err)
    # what the run wrote in the mounted folder is saved with its outputs; the upload is not
    out = conjure("ls", f"runs/{n1}/mnt/data", "--json")
    assert out.code == 0, out
    assert {e["path"] for e in json.loads(out.out)} >= {
        f"runs/{n1}/mnt/data/new.txt",
        f"runs/{n1}/mnt/data/train",
    }
    got = tmp_path / "got"
    cp = conjure("cp", f"runs/{n1}/mnt/data/train/a.txt", str(got), "--json")
    assert cp.code == 0, cp
    assert got.read_text() == "first\nmore\n" and json.loads(cp.out)["files"] == 1

    r2 = conjure("run", "--mount", "uploads/mnist:/mnt/data", "cat /mnt/data/train/a.txt", cwd=proj)
    assert r2.code == 0, r2
    assert r2.out == "first\n", r2  # the machine's cached copy was not changed by run 1
    assert "uploads/mnist: cached on this machine" in r2.err, r2

    whole = tmp_path / "whole"
    cp2 = conjure("cp", "uploads/mnist", str(whole))
    assert cp2.code == 0 and "Downloaded 2 file(s)" in cp2.err, cp2
    assert (whole / "train" / "a.txt").read_text() == "first\n"

    bad = conjure("rm", f"runs/{n1}/mnt/data/new.txt")
    assert bad.code == 2 and "only uploads can be removed" in bad.err, bad
    rm = conjure("rm", "uploads/mnist", "--json")
    assert rm.code == 0 and json.loads(rm.out)["files"] == 2, rm
    gone = conjure("run", "--mount", "uploads/mnist", "true", cwd=proj)
    assert gone.code == 2 and "uploads/mnist does not exist" in gone.err, gone
    assert "Casting" not in gone.err


@pytest.mark.parametrize(
    "args,message",
    [
        (["upload", "/nonexistent/x"], "does not exist"),
        (["upload", "{tmp}", "../escape"], "'..'"),
        (["cp", "logs/1", "{tmp}/x"], "must start with"),
        (["cp", "uploads/../../etc", "{tmp}/x"], "'..'"),
        (["ls", "/etc"], "must start with"),
        (["run", "--mount", "ftp://x/y", "true"], "unknown scheme"),
        (["run", "--mount", "s3://", "true"], "no bucket"),
        (["run", "--mount", "uploads/x:/mnt/../etc", "true"], "'..'"),
    ],
)
def test_resource_usage_errors(
    conjure_stack: Settings, tmp_path: Path, args: list[str], message: str
) -> None:
    r = conjure(*[a.replace("{tmp}", str(tmp_path)) for a in args], cwd=tmp_path)
    assert r.code == 2, r
    assert message in r.err and "Traceback" not in r.err, r


# --- a stack whose store is S3 -------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str]]:
    work = tmp_path_factory.mktemp("s3-stack")
    with emulators.moto(work) as endpoint:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="conjure-store")
        s3.create_bucket(Bucket="open-data")
        s3.put_object(Bucket="open-data", Key="climate/rain.csv", Body=b"month,mm\n1,42\n")
        env = stack_env(
            work / "home",
            CONJURE_STORE_URL="s3://conjure-store/team",
            CONJURE_S3_ENDPOINT_URL=endpoint,
            CONJURE_IDLE_TIMEOUT_SECONDS="600",
            **emulators.S3_CREDENTIALS,
        )
        with running_stack(env) as settings:
            yield settings, endpoint


def test_s3_store_upload_mount_bucket_and_outputs(
    s3_stack: tuple[Settings, str], tmp_path: Path
) -> None:
    settings, endpoint = s3_stack
    (tmp_path / "cfg.txt").write_text("lr=0.1\n")
    proj = tmp_path / "proj"
    proj.mkdir()
    up = conjure("upload", str(tmp_path / "cfg.txt"), "cfg.txt")
    assert up.code == 0, up
    r = conjure(
        "run",
        "--mount",
        "uploads/cfg.txt:/mnt/cfg.txt",
        "--mount",
        "s3://open-data/climate:data",
        "cat /mnt/cfg.txt data/rain.csv && echo 7 > data/result.txt && echo done > out.txt",
        cwd=proj,
    )
    assert r.code == 0, r
    assert r.out == "lr=0.1\nmonth,mm\n1,42\n", r
    assert "s3://open-data/climate: downloaded" in r.err, r
    n = run_id_of(r.err)
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    keys = {
        o["Key"]
        for o in s3.list_objects_v2(Bucket="conjure-store", Prefix=f"team/runs/{n}/")["Contents"]
    }
    assert keys == {f"team/runs/{n}/out.txt", f"team/runs/{n}/data/result.txt"}, keys
    assert "uploads/cfg.txt" in conjure("ls", "uploads").out
    logs = conjure("logs", str(n))
    assert "1,42" in logs.out, logs
    missing = conjure("run", "--mount", "s3://open-data/nothing", "true", cwd=proj)
    assert missing.code == 2 and "does not exist" in missing.err, missing
