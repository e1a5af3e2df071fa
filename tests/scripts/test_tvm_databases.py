"""Tuning databases: the CPU family from recorded flag sets (AVX2, AVX-512, AMX; AMD and Intel), pruning,
retargeting, archives, the choice get-tvm-tuning-db makes (shipped / --tuning_db / none, with the tuning command),
the shipped EfficientNet-Lite0 database itself, and TVM's RPC tracker with two servers on loopback. No network."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from cm_mlperf.tvm import databases, family

from tests.conftest import REPO_ROOT, load_script_module

SHIPPED = REPO_ROOT / "tuning-databases"
EFFNET_SHA = "39c29b15736ae2513381e50b4dc4d7fec456a3405ab296e7aa9accbe194d228c"

# /proc/cpuinfo flag lines as recorded on real machines (trimmed of flags that do not decide anything here)
_BASE = "fpu sse sse2 pni ssse3 sse4_1 sse4_2 cx16 popcnt movbe xsave avx f16c fma abm lahf_lm bmi1 bmi2 avx2 mmx"
_AVX512 = "avx512f avx512dq avx512cd avx512bw avx512vl"
FLAGS = {
    # Intel Xeon Platinum 8480+ (Sapphire Rapids): AVX-512 + VNNI + BF16 + AMX
    "intel-spr": f"{_BASE} {_AVX512} avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_bf16 amx_int8 avx_vnni",
    # AMD EPYC 9654 (Genoa, Zen 4) in a VM: AVX-512 + VNNI + BF16, no pku / flush_l1d
    "amd-genoa": f"{_BASE} {_AVX512} avx512_vnni avx512_bf16 avx512ifma avx512vbmi avx512_vbmi2 gfni vaes "
                 f"vpclmulqdq avx512_bitalg avx512_vpopcntdq clzero sha_ni clwb clflushopt adx rdseed xsavec "
                 f"xsaveopt xsaves rdpid fsrm sse4a",
    # Intel Xeon Gold 6148 (Skylake-SP): AVX-512 without VNNI
    "intel-skx": f"{_BASE} {_AVX512} clflushopt clwb",
    # AMD EPYC 7742 (Rome, Zen 2): AVX2 only
    "amd-rome": f"{_BASE} sse4a clzero sha_ni clwb clflushopt adx rdseed",
    # Intel Core i7-4770 (Haswell): AVX2 only
    "intel-haswell": _BASE,
    # an old Xeon with AVX but no AVX2
    "intel-snb": "fpu sse sse2 pni ssse3 sse4_1 sse4_2 cx16 popcnt xsave avx lahf_lm mmx",
}


GENOA_VM = ("fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht "
            "syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid "
            "extd_apicid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt "
            "tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a "
            "misalignsse 3dnowprefetch osvw topoext vmmcall fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid "
            "avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt "
            "xsavec xgetbv1 xsaves avx512_bf16 clzero xsaveerptr arat avx512vbmi umip avx512_vbmi2 gfni vaes "
            "vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid fsrm")


@pytest.mark.parametrize("cpu,expected", [
    ("intel-spr", "x86_64_v4"), ("amd-genoa", "x86_64_v4"), ("intel-skx", "x86_64_v4"),
    ("amd-rome", "x86_64_v3"), ("intel-haswell", "x86_64_v3"), ("intel-snb", "x86_64_v2"),
])
def test_family_from_recorded_flags(cpu, expected):
    assert family.family_from_flags(FLAGS[cpu].split()) == expected


def test_family_across_vendors_and_extras():
    # the two machines this collection alternates on share one family: a database tuned on one serves the other
    assert family.family_from_flags(FLAGS["intel-spr"].split()) == family.family_from_flags(FLAGS["amd-genoa"].split())
    assert family.family_extras(FLAGS["intel-spr"].split()) == ["amx", "avx-vnni", "bf16", "vnni"]
    assert family.family_extras(FLAGS["amd-genoa"].split()) == ["bf16", "vnni"]
    assert family.family_extras(FLAGS["intel-skx"].split()) == []
    assert family.family_from_flags(["neon", "asimd"], arch="aarch64") == "aarch64"


def test_llvm_cpu_names_from_archspec():
    import archspec.cpu

    # full flag sets: the AMD EPYC line recorded on this project's VM, Intel ones as archspec lists their ISA
    spr = sorted(archspec.cpu.TARGETS["sapphirerapids"].features)
    assert family.llvm_cpu_name("GenuineIntel", spr) == "sapphirerapids"
    assert family.llvm_cpu_name("AuthenticAMD", GENOA_VM.split()) == "znver4"  # the VM hides pku: still zen4
    assert family.llvm_cpu_name("GenuineIntel", sorted(archspec.cpu.TARGETS["haswell"].features)) == "haswell"
    assert family.family_from_flags(GENOA_VM.split()) == family.family_from_flags(spr) == "x86_64_v4"


def test_detect_cpu_reports_family(script_module):
    customize = script_module("detect-cpu")
    i = {"env": {}, "input": {}, "state": {}}
    assert customize.preprocess(i)["return"] == 0
    assert i["env"]["CM_HOST_CPU_FAMILY"].startswith(("x86_64", "aarch64")) or i["env"]["CM_HOST_CPU_FAMILY"]
    assert i["env"]["CM_HOST_CPU_LLVM_MCPU"]


# ----------------------------------------------------------------------------- database files

def _fake_db(folder: Path) -> Path:
    """A database in TVM's JSON format: 2 workloads, 5 records (one failed), as JSONDatabase writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / databases.WORKLOADS).write_text('["111", "AAAA"]\n["222", "BBBB"]\n')
    target = {"keys": ["cpu"], "kind": "llvm", "mcpu": "znver4", "num-cores": 2, "tag": ""}
    recs = [(0, [3e-6]), (0, [1e-6]), (1, [5e-6]), (1, [1e10]), (0, [2e-6])]
    (folder / databases.RECORDS).write_text("".join(
        json.dumps([w, [[["trace", k]], secs, target, []]]) + "\n" for k, (w, secs) in enumerate(recs)))
    return folder


def test_prune_keeps_the_best_record_per_workload_and_retargets(tmp_path):
    src = _fake_db(tmp_path / "src")
    counts = databases.prune(src, tmp_path / "out", target={"kind": "llvm", "mcpu": "sapphirerapids",
                                                            "num-cores": 2})
    assert counts == {"workloads": 2, "records": 2, "workloads_before": 2}
    lines = [json.loads(ln) for ln in (tmp_path / "out" / databases.RECORDS).read_text().splitlines()]
    assert [(w, body[1]) for w, body in lines] == [(0, [1e-6]), (1, [5e-6])]
    assert {body[2]["mcpu"] for _, body in lines} == {"sapphirerapids"}
    assert (tmp_path / "out" / databases.WORKLOADS).read_text() == (src / databases.WORKLOADS).read_text()


def test_manifest_archive_roundtrip_and_content_hash(tmp_path):
    db = _fake_db(tmp_path / "db")
    databases.prune(db, db)
    manifest = databases.make_manifest(db, name="tiny-b1-x86_64_v4", model_name="tiny", model_sha256="ab" * 32,
                                       batch_size=1, family="x86_64_v4", tvm_version="0.27.0", trials=5,
                                       tuning_seconds=1.0)
    assert manifest["records"] == 2 and manifest["per_task"][0]["best_us"] == 1.0 and manifest["date"]
    archive = databases.write_archive(db, tmp_path / "share" / "tiny.tar.gz")
    back = databases.unpack(archive, tmp_path / "back")
    assert databases.content_sha256(back) == databases.content_sha256(db)
    assert databases.read_manifest(back)["name"] == "tiny-b1-x86_64_v4"
    (db / databases.RECORDS).write_text((db / databases.RECORDS).read_text().replace("1e-06", "9e-07"))
    assert databases.content_sha256(back) != databases.content_sha256(db)  # content, not path or mtime


def test_history_totals_add_up_over_resumed_runs(tmp_path):
    """A manifest reports every trial and second behind a database: a resumed run's tuning-info.json counts only
    its own, so the totals follow `resumed.from` back (or take the run's own totals, or the base's manifest)."""
    first = _fake_db(tmp_path / "first")
    (first / "tuning-info.json").write_text(json.dumps({"trials_done": 3001, "tuning_seconds": 2667.5,
                                                         "resumed": {"from": None}}))
    second = _fake_db(tmp_path / "second")
    (second / "tuning-info.json").write_text(json.dumps({"trials_done": 2500, "tuning_seconds": 1800.0,
                                                          "resumed": {"from": str(first)}}))
    assert databases.history_totals(first) == {"trials": 3001, "tuning_seconds": 2667.5}
    assert databases.history_totals(second) == {"trials": 5501, "tuning_seconds": 4467.5}
    (second / "tuning-info.json").write_text(json.dumps({"trials_done": 2500, "trials_total": 9000,
                                                          "tuning_seconds_total": 9.0}))
    assert databases.history_totals(second) == {"trials": 9000, "tuning_seconds": 9.0}
    shipped = _fake_db(tmp_path / "shipped")  # a shipped folder: its manifest holds the totals
    databases.make_manifest(shipped, name="x", model_name="tiny", model_sha256="ab" * 32, batch_size=1,
                            family="x86_64_v4", trials=7000, tuning_seconds=600.0)
    assert databases.history_totals(shipped) == {"trials": 7000, "tuning_seconds": 600.0}
    assert databases.history_totals(_fake_db(tmp_path / "bare")) == {"trials": 5, "tuning_seconds": None}


def test_bad_tuning_db_paths_are_clear(tmp_path):
    with pytest.raises(databases.TuningDatabaseError, match="--tuning_db=.*no such file or folder"):
        databases.check_folder(tmp_path / "nowhere")
    (tmp_path / "x.tar.gz").write_bytes(b"not gzip at all")
    with pytest.raises(databases.TuningDatabaseError, match="not a readable .tar.gz"):
        databases.unpack(tmp_path / "x.tar.gz", tmp_path / "out")
    with pytest.raises(databases.TuningDatabaseError, match="database_tuning_record.json missing"):
        (tmp_path / "half").mkdir()
        (tmp_path / "half" / databases.WORKLOADS).write_text("")
        databases.check_folder(tmp_path / "half")


# ----------------------------------------------------------------------------- the choice, and the shipped database

def test_shipped_effnet_database_is_complete_and_small():
    folder = SHIPPED / "efficientnet-lite0-b1-x86_64_v4"
    manifest = databases.read_manifest(folder)
    for key in ("model_sha256", "target", "tvm_version", "trials", "tuning_seconds", "date", "per_task", "family"):
        assert manifest.get(key), key
    assert manifest["model_sha256"] == EFFNET_SHA and manifest["family"] == "x86_64_v4"
    assert manifest["records"] == manifest["workloads"] == len(manifest["per_task"]) == 35  # best records only
    assert manifest["database_sha256"] == databases.content_sha256(folder)
    assert sum(f.stat().st_size for f in folder.iterdir()) < 5 * 2**20


@pytest.mark.parametrize("cpu", ["intel-spr", "amd-genoa", "intel-skx"])
def test_shipped_database_serves_every_avx512_cpu(cpu):
    chosen = databases.choose(user_db="", shipped_root=SHIPPED, model_name="efficientnet-lite0",
                              model_sha256=EFFNET_SHA, batch_size=1,
                              family=family.family_from_flags(FLAGS[cpu].split()), tvm_version="0.27.0.post1")
    assert chosen["CM_TVM_TUNING_DB_SOURCE"] == "shipped"
    assert chosen["CM_TVM_TUNING_DB_NAME"] == "efficientnet-lite0-b1-nchwc-x86_64_v4"  # NCHWc preferred
    assert chosen["CM_TVM_CONV_LAYOUT_USED"] == "NCHWc" and len(chosen["CM_TVM_TUNING_DB_SHA256"]) == 64
    nchw = databases.choose(user_db="", shipped_root=SHIPPED, model_name="efficientnet-lite0",
                            model_sha256=EFFNET_SHA, batch_size=1, conv_layout="nchw",
                            family=family.family_from_flags(FLAGS[cpu].split()), tvm_version="0.27.0.post1")
    assert nchw["CM_TVM_TUNING_DB_NAME"] == "efficientnet-lite0-b1-x86_64_v4"
    assert nchw["CM_TVM_CONV_LAYOUT_USED"] == "NCHW"


@pytest.mark.parametrize("cpu, threads, expected", [
    ("amd-genoa", 1, "efficientnet-lite0-b1-nchwc-t1-x86_64_v4"),  # Offline/Server: one thread per instance
    ("intel-spr", 1, "efficientnet-lite0-b1-nchwc-t1-x86_64_v4"),
    ("amd-genoa", 2, "efficientnet-lite0-b1-nchwc-x86_64_v4"),  # SingleStream: every core on one image
    ("intel-spr", 8, "efficientnet-lite0-b1-nchwc-x86_64_v4"),
    ("amd-genoa", 0, "efficientnet-lite0-b1-nchwc-x86_64_v4"),  # unknown: the multi-threaded kind
    ("amd-rome", 1, "efficientnet-lite0-b1-nchwc-t1-x86_64_v3"),
    ("amd-rome", 4, "efficientnet-lite0-b1-nchwc-x86_64_v3"),
])
def test_the_database_fits_the_threads_per_inference(cpu, threads, expected):
    """Single-threaded builds get the database whose kernels have no parallel loops; multi-threaded ones the other."""
    fam = family.family_from_flags(FLAGS[cpu].split())
    chosen = databases.choose(user_db="", shipped_root=SHIPPED, model_name="efficientnet-lite0",
                              model_sha256=EFFNET_SHA, batch_size=1, family=fam, tvm_version="0.27.0", threads=threads)
    assert chosen["CM_TVM_TUNING_DB_NAME"] == expected
    manifest = databases.read_manifest(SHIPPED / expected)
    assert (databases.database_threads(manifest) == 1) == (threads == 1)
    assert ("for 1 thread per inference" in chosen["CM_TVM_TUNING_DB_NOTE"]) == (threads == 1)
    # ResNet-50's graph has both kinds too
    rn = databases.find_shipped(SHIPPED, model_sha256=databases.read_manifest(
        SHIPPED / "light_resnet50-b1-nchwc-x86_64_v4")["model_sha256"], batch_size=1, family=fam,
        tvm_version="0.27.0", threads=threads)[0]
    assert rn is not None and (databases.database_threads(databases.read_manifest(rn)) == 1) == (threads == 1)


def test_avx2_cpus_get_the_avx2_database():
    chosen = databases.choose(user_db="", shipped_root=SHIPPED, model_name="efficientnet-lite0",
                              model_sha256=EFFNET_SHA, batch_size=1,
                              family=family.family_from_flags(FLAGS["amd-rome"].split()), tvm_version="0.27.0")
    assert chosen["CM_TVM_TUNING_DB_NAME"] == "efficientnet-lite0-b1-nchwc-x86_64_v3"


@pytest.mark.parametrize("cpu,batch,tvm_version,layout", [("amd-rome", 1, "0.27.0", "nchw"),
                                                          ("intel-spr", 4, "0.27.0", "auto"),
                                                          ("intel-spr", 1, "0.28.0", "auto")])
def test_no_matching_database_says_untuned_and_how_to_tune(cpu, batch, tvm_version, layout):
    chosen = databases.choose(user_db="", shipped_root=SHIPPED, model_name="efficientnet-lite0",
                              model_sha256=EFFNET_SHA, batch_size=batch, conv_layout=layout,
                              family=family.family_from_flags(FLAGS[cpu].split()), tvm_version=tvm_version)
    assert chosen["CM_TVM_TUNING_DB_SOURCE"] == "none" and chosen["CM_TVM_TUNING_DB_NAME"] == "untuned"
    note = chosen["CM_TVM_TUNING_DB_NOTE"]
    assert "\n" not in note and "untuned" in note and "cm run script --tags=run-mlperf,inference,_tvm,_tune" in note
    assert (f"--batch_size={batch}" in note) == (batch != 1)


def test_get_tvm_tuning_db_script(tmp_path, monkeypatch):
    customize = load_script_module("get-tvm-tuning-db")
    base = {"CM_ML_MODEL_NAME": "efficientnet-lite0", "CM_ML_MODEL_SHA256": EFFNET_SHA, "CM_TVM_BATCH_SIZE": "1",
            "CM_HOST_CPU_FLAGS": FLAGS["intel-spr"], "CM_TVM_VERSION": "0.27.0.post1"}
    i = {"env": dict(base), "input": {}, "state": {},
         "run_script_input": {"path": str(REPO_ROOT / "script" / "get-tvm-tuning-db")}}
    assert customize.preprocess(i)["return"] == 0 and i["env"]["CM_TVM_TUNING_DB_SOURCE"] == "shipped"
    i["env"] = {**base, "CM_TVM_TUNING_DB": "no"}
    assert customize.preprocess(i)["return"] == 0 and i["env"]["CM_TVM_TUNING_DB_NAME"] == "untuned"
    monkeypatch.setenv("PWD", str(tmp_path))
    db = _fake_db(tmp_path / "mine")
    i["env"] = {**base, "CM_TVM_TUNING_DB": "mine"}  # relative to where cm was started
    assert customize.preprocess(i)["return"] == 0
    assert i["env"]["CM_TVM_TUNING_DB_PATH"] == str(db) and i["env"]["CM_TVM_TUNING_DB_SOURCE"] == "user"
    i["env"] = {**base, "CM_TVM_TUNING_DB": "missing-db"}
    r = customize.preprocess(i)
    assert r["return"] == 1 and "--tuning_db=" in r["error"] and "no such file or folder" in r["error"]


# ----------------------------------------------------------------------------- TVM's RPC tracker on loopback

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rpc_cluster(tmp_path):
    """A tracker and two servers on 127.0.0.1, started by cm_mlperf.tvm.rpc (what the start scripts run); stopped
    at the end whatever happens."""
    pytest.importorskip("tornado")
    pytest.importorskip("tvm")
    from cm_mlperf.tvm import rpc

    port = _free_port()
    started = []
    try:
        started.append(rpc.start_tracker("127.0.0.1", port, tmp_path))
        for _ in range(2):
            started.append(rpc.start_server(f"127.0.0.1:{port}", "test-key", port=_free_port(), threads=1,
                                            log_dir=tmp_path))
        yield {"port": port, "key": "test-key", "rpc": rpc}
    finally:
        for proc in reversed(started):
            rpc.stop(proc.pid)


def test_rpc_tracker_with_two_servers_on_loopback(rpc_cluster):
    rpc = rpc_cluster["rpc"]
    assert rpc.count_servers("127.0.0.1", rpc_cluster["port"], rpc_cluster["key"]) == 2
    assert rpc.count_servers("127.0.0.1", rpc_cluster["port"], "other-key") == 0
    with pytest.raises(rpc.RPCError, match="already in use"):
        rpc.start_tracker("127.0.0.1", rpc_cluster["port"])


def test_rpc_server_without_tracker_is_a_clear_error(tmp_path):
    pytest.importorskip("tvm")
    from cm_mlperf.tvm import rpc

    with pytest.raises(rpc.RPCError, match="no RPC tracker answers"):
        rpc.start_server(f"127.0.0.1:{_free_port()}", "k", log_dir=tmp_path)
    with pytest.raises(rpc.RPCError, match="HOST:PORT"):
        rpc.parse_address("localhost")


@pytest.mark.parametrize("tags,port,message", [
    ("start,tvm,rpc-tracker", "70000", "--port=70000: 70000 is greater than the maximum of 65535"),
    ("start,tvm,rpc-server", "x", "--port=x: must be an integer"),
])
def test_rpc_scripts_reject_a_bad_port_first(cm_home, tmp_path, tags, port, message):
    import subprocess

    from conftest import cm_env

    r = subprocess.run(["cm", "run", "script", f"--tags={tags}", f"--port={port}"], env=cm_env(cm_home),
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 1 and message in r.stderr
