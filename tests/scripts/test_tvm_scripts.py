"""detect-os, detect-cpu, get-tvm and compile-tvm-model: pure helpers on fixture texts, and a real compile of
a tiny generated ONNX model (conv + batchnorm + relu + global-average-pool + matmul, a few KB) checked
against onnxruntime. No network; about 20-30 s, most of it TVM compiling the tiny model twice."""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from cm_mlperf.tvm.steps import compile_from_env

from tests.conftest import SCRIPTS_DIR

# ----------------------------------------------------------------------------- cpuinfo fixtures

INTEL_SPR = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
siblings\t: 2
core id\t\t: 0
cpu cores\t: 1
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 \
avx512_fp16 amx_bf16 amx_tile amx_int8

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
siblings\t: 2
core id\t\t: 0
cpu cores\t: 1
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 \
avx512_fp16 amx_bf16 amx_tile amx_int8
"""

AMD_GENOA = "\n".join(
    f"""processor\t: {n}
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9654 96-Core Processor
physical id\t: {n // 4}
core id\t\t: {n % 4}
cpu cores\t: 4
flags\t\t: fpu sse sse2 avx avx2 fma vaes vpclmulqdq clwb avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16
"""
    for n in range(8)
)

OLD_AVX2 = "\n".join(
    f"""processor\t: {n}
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz
physical id\t: 0
core id\t\t: {n % 2}
cpu cores\t: 2
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi1 bmi2
"""
    for n in range(4)
)

AMD_MILAN = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx avx2 fma clwb vaes vpclmulqdq
"""

NEOVERSE_N1 = """\
processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
"""


@pytest.fixture(scope="module")
def cpu_facts():
    from tests.conftest import load_script_module

    return load_script_module("detect-cpu", "cpu_facts")


@pytest.mark.parametrize(
    ("text", "arch", "mcpu", "logical", "physical", "sockets"),
    [
        (INTEL_SPR, "x86_64", "sapphirerapids", 2, 1, 1),
        (AMD_GENOA, "x86_64", "znver4", 8, 8, 2),
        (OLD_AVX2, "x86_64", "haswell", 4, 2, 1),
        (AMD_MILAN, "x86_64", "znver3", 1, None, None),
        (NEOVERSE_N1, "aarch64", "neoverse-n1", 1, None, None),
    ],
    ids=["intel-spr", "amd-genoa", "old-avx2", "amd-milan-vm", "neoverse-n1"],
)
def test_cpu_facts_from_cpuinfo(cpu_facts, text, arch, mcpu, logical, physical, sockets):
    facts = cpu_facts.cpu_facts(text, arch)
    assert facts["llvm_mcpu"] == mcpu
    assert facts["logical_cores"] == logical
    assert facts["physical_cores"] == physical
    assert facts["sockets"] == sockets


def test_mcpu_rules_are_data(cpu_facts):
    assert cpu_facts.llvm_mcpu("GenuineIntel", ["avx512f", "avx512_vnni", "avx512_bf16"]) == "cooperlake"
    assert cpu_facts.llvm_mcpu("GenuineIntel", ["avx512f", "avx512_vnni"]) == "cascadelake"
    assert cpu_facts.llvm_mcpu("GenuineIntel", ["avx2", "avx512f"]) == "skylake-avx512"
    assert cpu_facts.llvm_mcpu("AuthenticAMD", ["avx2", "clwb"]) == "znver2"
    assert cpu_facts.llvm_mcpu("GenuineIntel", ["sse2", "sse4_2"]) == "x86-64"
    assert cpu_facts.llvm_mcpu("", [], "aarch64", "0x41", "0xfff") == "generic"


def test_cpu_env_and_override(cpu_facts):
    env = cpu_facts.cpu_env(AMD_GENOA, "x86_64")
    assert env["CM_HOST_CPU_LLVM_MCPU"] == "znver4"
    assert env["CM_HOST_CPU_MODEL_NAME"] == "AMD EPYC 9654 96-Core Processor"
    assert env["CM_HOST_CPU_VENDOR_ID"] == "AuthenticAMD"
    assert (env["CM_HOST_CPU_TOTAL_CORES"], env["CM_HOST_CPU_PHYSICAL_CORES"], env["CM_HOST_CPU_SOCKETS"]) == (
        "8", "8", "2")
    assert "avx512f" in env["CM_HOST_CPU_FLAGS"].split()
    assert float(env["CM_HOST_MEMORY_GB"]) > 0
    assert cpu_facts.cpu_env(AMD_GENOA, "x86_64", mcpu_override="x86-64")["CM_HOST_CPU_LLVM_MCPU"] == "x86-64"


def _i(script: str, env: dict[str, str] | None = None) -> dict:
    return {"env": dict(env or {}), "state": {}, "input": {}, "meta": {},
            "run_script_input": {"path": str(SCRIPTS_DIR / script)}}


def test_detect_cpu_preprocess(script_module):
    customize = script_module("detect-cpu")
    i = _i("detect-cpu")
    assert customize.preprocess(i)["return"] == 0
    for key in ("CM_HOST_CPU_MODEL_NAME", "CM_HOST_CPU_VENDOR_ID", "CM_HOST_CPU_TOTAL_CORES",
                "CM_HOST_CPU_PHYSICAL_CORES", "CM_HOST_CPU_SOCKETS", "CM_HOST_CPU_FLAGS", "CM_HOST_MEMORY_GB",
                "CM_HOST_CPU_LLVM_MCPU"):
        assert i["env"][key], key
    i = _i("detect-cpu", {"CM_HOST_CPU_LLVM_MCPU": "haswell"})  # --mcpu
    assert customize.preprocess(i)["return"] == 0
    assert i["env"]["CM_HOST_CPU_LLVM_MCPU"] == "haswell"


def test_detect_os(script_module):
    os_facts = script_module("detect-os", "os_facts")
    rel = os_facts.parse_os_release('NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\n# c\n')
    assert rel == {"NAME": "Debian GNU/Linux", "ID": "debian", "VERSION_ID": "12"}
    customize = script_module("detect-os")
    i = _i("detect-os")
    assert customize.preprocess(i)["return"] == 0
    for key in ("CM_HOST_OS_TYPE", "CM_HOST_OS_FLAVOR", "CM_HOST_OS_KERNEL_VERSION", "CM_HOST_PLATFORM_FLAVOR",
                "CM_HOST_PYTHON_VERSION"):
        assert i["env"][key], key
    assert "CM_HOST_OS_VERSION" in i["env"]


# ----------------------------------------------------------------------------- get-tvm

def test_get_tvm(script_module):
    pytest.importorskip("tvm")
    run = script_module("get-tvm", "run")
    env, _ = run.main({})
    assert env["CM_TVM_VERSION"].startswith("0.")
    assert env["CM_TVM_LLVM_VERSION"]


def test_get_tvm_missing_and_bad_ffi(script_module, monkeypatch):
    probe = script_module("get-tvm", "tvm_probe")
    assert probe.ffi_warnings("0.1.15.post2") and not probe.ffi_warnings("0.1.14.post0")
    real_import = probe.importlib.import_module

    def fake_import(name, *a, **k):
        if name == "tvm":
            raise ImportError("No module named 'tvm'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(probe.importlib, "import_module", fake_import)
    with pytest.raises(probe.TVMProbeError, match=r"pip install 'apache-tvm==0\.27\.\*'"):
        probe.probe_tvm()


# ----------------------------------------------------------------------------- compile-tvm-model

def make_tiny_onnx(path: Path, seed: int = 1, batch: int = 1) -> Path:
    """conv(3->8, s2) + batchnorm + relu + GAP + reshape([batch, 8], baked) + matmul + add + softmax, 16x16 input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def f32(*shape: int, scale: float = 1.0, offset: float = 0.0) -> np.ndarray:
        return (offset + scale * rng.standard_normal(shape)).astype(np.float32)

    arrays = {"w": f32(8, 3, 3, 3, scale=0.3), "b": f32(8, scale=0.1), "scale": f32(8, scale=0.1, offset=1.0),
              "bias": f32(8, scale=0.1), "mean": f32(8, scale=0.1), "var": np.abs(f32(8, scale=0.1)) + 1.0,
              "fc": f32(8, 10, scale=0.5), "fb": f32(10, scale=0.1), "shape": np.array([batch, 8], np.int64)}
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Reshape", ["g", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["m"]),
        helper.make_node("Add", ["m", "fb"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])
    probs = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 10])
    graph = helper.make_graph(nodes, "tiny", [x], [probs], [numpy_helper.from_array(a, n) for n, a in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def full_step(customize, step, i: dict) -> dict:
    """What the engine does: customize.preprocess (cheap checks), then the run step in this process."""
    from cm_mlperf.run_step import StepError

    r = customize.preprocess(i)
    if r["return"]:
        return r
    try:
        new_env, _ = step(i["env"])
    except StepError as e:
        return {"return": 1, "error": str(e)}
    i["env"].update(new_env)
    return {"return": 0}


def _tvm_module(module: str):
    pytest.importorskip("tvm")
    pytest.importorskip("onnxruntime")

    return importlib.import_module(f"cm_mlperf.tvm.{module}")


@pytest.fixture(scope="module")
def tvm_compile_model():
    return _tvm_module("compile")


@pytest.fixture(scope="module")
def tvm_frontend():
    return _tvm_module("frontend")


@pytest.fixture(scope="module")
def tvm_verify():
    return _tvm_module("verify")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    pytest.importorskip("onnx")
    return make_tiny_onnx(tmp_path_factory.mktemp("models") / "tiny.onnx")


@pytest.fixture(scope="module")
def host_mcpu(cpu_facts) -> str:
    return cpu_facts.cpu_env()["CM_HOST_CPU_LLVM_MCPU"]


@pytest.fixture(scope="module")
def compiled_b1(tiny, tvm_compile_model, tmp_path_factory) -> dict:
    """compile-tvm-model's preprocess run as the engine would: env in, files in cwd, env out."""
    from tests.conftest import load_script_module

    customize = load_script_module("compile-tvm-model")
    data = tmp_path_factory.mktemp("preprocessed")
    rng = np.random.default_rng(7)
    for k in range(2):
        np.save(data / f"img{k}.npy", rng.uniform(-1, 1, (3, 16, 16)).astype(np.float32))
    (data / "val_map.txt").write_text("img0.npy 3\nimg1.npy 5\n")
    run_dir = tmp_path_factory.mktemp("cache-entry")
    env = {"CM_ML_MODEL_FILE_WITH_PATH": str(tiny), "CM_ML_MODEL_NAME": "tiny", "CM_ML_MODEL_INPUT_NAME": "x",
           "CM_ML_MODEL_OUTPUT_NAME": "probs", "CM_ML_MODEL_INPUT_LAYOUT": "NCHW",
           "CM_ML_MODEL_IMAGE_HEIGHT": "16", "CM_ML_MODEL_IMAGE_WIDTH": "16",
           "CM_TVM_BATCH_SIZE": "1", "CM_TVM_NUM_THREADS": "1", "CM_TVM_PIPELINE": "default",
           "CM_DATASET_PREPROCESSED_PATH": str(data)}
    i = _i("compile-tvm-model", env)
    old = os.getcwd()
    os.chdir(run_dir)
    try:
        r = full_step(customize, compile_from_env, i)
    finally:
        os.chdir(old)
    assert r["return"] == 0, r.get("error")
    return {"env": i["env"], "dir": run_dir}


def test_compile_batch1_via_customize(compiled_b1):
    env, run_dir = compiled_b1["env"], compiled_b1["dir"]
    so = Path(env["CM_TVM_MODEL_SO"])
    assert so == run_dir / "model-tiny-b1.so" and so.is_file()
    assert env["CM_TVM_BATCH_SIZE"] == "1"
    assert (env["CM_TVM_MODEL_OUTPUTS"], env["CM_TVM_MODEL_OUTPUT_INDEX"]) == ("probs", "0")
    target = json.loads(env["CM_TVM_TARGET"])
    assert target["kind"] == "llvm" and target["num-cores"] == 1 and target["mcpu"]
    assert float(env["CM_TVM_MODEL_VERIFIED_MAX_REL_ERR"]) < 1e-4
    assert env["TVM_THREAD_POOL_SPIN_COUNT"] == "0"  # for the harness process: TVM's idle workers sleep at once
    info = json.loads((run_dir / "compile-info.json").read_text())
    assert info["library"] == "model-tiny-b1.so" and info["pipeline"] == "default" and info["batch_size"] == 1
    assert info["verification"]["passed"] is True
    labels = {c["input"] for c in info["verification"]["checks"]}
    assert any("random" in label for label in labels) and any("preprocessed" in label for label in labels)
    assert str(run_dir) not in (run_dir / "compile-info.json").read_text()  # no absolute paths in the file


def test_thread_spin_setting(script_module):
    from cm_mlperf.tvm import steps

    assert steps.runtime_spin_env({"CM_TVM_THREAD_POOL_SPIN_COUNT": "300000"}) == {
        "TVM_THREAD_POOL_SPIN_COUNT": "300000"}
    with pytest.raises(steps.StepError, match="--thread_spin=lots: give a whole number"):
        steps.runtime_spin_env({"CM_TVM_THREAD_POOL_SPIN_COUNT": "lots"})
    customize = script_module("compile-tvm-model", "customize")
    r = customize.preprocess(_i("compile-tvm-model", {"CM_ML_MODEL_FILE_WITH_PATH": "m.onnx",
                                                      "CM_TVM_THREAD_POOL_SPIN_COUNT": "-1"}))
    assert r["return"] == 1 and "--thread_spin" in r["error"]


def test_compile_batch4_rewrites_reshape(tiny, tvm_frontend, tvm_compile_model, host_mcpu, tmp_path):
    import onnx

    fixed, rewritten = tvm_frontend.set_batch_size(onnx.load(str(tiny)), "x", 4)
    assert rewritten == 1
    mcpu = host_mcpu  # (x86-64 + 'fused' hits a TVM 0.27/LLVM 22 miscompile at batch 4)
    info = tvm_compile_model.compile_model(tiny, batch_size=4, mcpu=mcpu, num_cores=1, input_name="x",
                                           pipeline="fused", out_dir=str(tmp_path), model_name="tiny")
    assert Path(info["so_path"]).name == "model-tiny-b4.so"
    assert info["input_shape"] == [4, 3, 16, 16] and info["reshape_constants_rewritten"] == 1
    assert info["verification"]["passed"] and info["verification"]["max_rel_err"] < 1e-4


def test_verify_detects_a_different_model(compiled_b1, tvm_verify, tmp_path):
    other = make_tiny_onnx(tmp_path / "other.onnx", seed=2)
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    with pytest.raises(tvm_verify.TVMVerificationError, match="max relative error .* > tolerance") as exc:
        tvm_verify.verify_against_onnxruntime(compiled_b1["env"]["CM_TVM_MODEL_SO"], other, {"random": x})
    assert exc.value.report["passed"] is False and exc.value.report["max_rel_err"] > 1e-3


def test_compare_outputs_metric(tvm_verify):
    flat = np.full((2, 1000), 1e-3, np.float32)
    tie = flat.copy()
    tie[:, 5] += 1e-9  # a tie broken differently: not a decisive argmax mismatch
    (res,) = tvm_verify.compare_outputs([tie], [flat], ["softmax"], 1e-3)
    assert res["ok"] and res["argmax_mismatches"] == 2 and res["decisive_argmax_mismatches"] == 0
    huge = np.random.default_rng(0).standard_normal((2, 10)) * 1e9  # huge activations: scale-free metric
    (res,) = tvm_verify.compare_outputs([huge * (1 + 1e-6)], [huge], ["logits"], 1e-3)
    assert res["ok"] and res["max_rel_err"] < 1e-5
    swapped = huge.copy()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]
    (res,) = tvm_verify.compare_outputs([swapped], [huge], ["logits"], 1e-3)
    assert not res["ok"] and "max relative error" in res["problem"]


def test_bad_mcpu_is_a_clear_error(tiny, script_module, tmp_path, monkeypatch):
    pytest.importorskip("tvm")
    customize = script_module("compile-tvm-model")
    monkeypatch.chdir(tmp_path)
    i = _i("compile-tvm-model", {"CM_ML_MODEL_FILE_WITH_PATH": str(tiny), "CM_TVM_MCPU": "pentium-9000"})
    r = full_step(customize, compile_from_env, i)
    assert r["return"] == 1
    assert "pentium-9000" in r["error"] and "--mcpu" in r["error"]
    assert not list(tmp_path.glob("*.so"))


def test_mcpu_beyond_this_cpu_is_refused(tiny, tvm_compile_model, tmp_path):
    with pytest.raises(tvm_compile_model.TVMCompileError, match="illegal instruction"):
        tvm_compile_model.compile_model(tiny, batch_size=1, mcpu="sapphirerapids", num_cores=1,
                                        out_dir=str(tmp_path), host_flags=["sse2", "avx", "avx2", "fma"])


def test_corrupt_onnx_is_a_clear_error(script_module, tmp_path, monkeypatch):
    pytest.importorskip("tvm")
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage, not a protobuf \xff\xfe" * 10)
    customize = script_module("compile-tvm-model")
    monkeypatch.chdir(tmp_path)
    r = full_step(customize, compile_from_env, _i("compile-tvm-model", {"CM_ML_MODEL_FILE_WITH_PATH": str(bad),
                                                      "CM_TVM_MCPU": "x86-64"}))
    assert r["return"] == 1 and "broken.onnx" in r["error"] and "fetch the model again" in r["error"]
    r = customize.preprocess(_i("compile-tvm-model", {"CM_TVM_MCPU": "x86-64"}))
    assert r["return"] == 1 and "CM_ML_MODEL_FILE_WITH_PATH" in r["error"]


def test_unknown_pipeline_and_batch(tiny, tvm_compile_model, tmp_path):
    with pytest.raises(tvm_compile_model.TVMCompileError, match="unknown TVM pipeline 'turbo'"):
        tvm_compile_model.compile_model(tiny, batch_size=1, mcpu="x86-64", num_cores=1, pipeline="turbo",
                                        out_dir=str(tmp_path), verify=False)
    with pytest.raises(tvm_compile_model.TVMCompileError, match="batch size"):
        tvm_compile_model.compile_model(tiny, batch_size=0, mcpu="x86-64", num_cores=1, out_dir=str(tmp_path))
