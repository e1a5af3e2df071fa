"""MetaSchedule JSON tuning databases as files: find the shipped one that fits a model and CPU family, import a
folder or .tar.gz, prune to the best records, retarget, write a manifest, export. No TVM import: plain JSON.

A database is a folder with `database_workload.json` (one `[structural hash, base64 TIR]` per line) and
`database_tuning_record.json` (one `[workload line index, [trace, run seconds, target, args]]` per line), as TVM's
JSONDatabase writes them, plus our `manifest.json`:

    {"name", "model_name", "model_sha256", "batch_size", "conv_layout", "family", "family_extras",
     "tuned_on": {cpu, mcpu, vendor},
     "target", "tvm_version", "trials", "tuning_seconds", "date", "records", "workloads", "per_task": [...]}

TVM looks records up by workload hash only (the target is not compared), so which database fits which CPU is our
decision: the manifest's `family` (cm_mlperf.tvm.family) must equal the host's. The convolution layout the model was
tuned in (`conv_layout`: NCHW as imported, or NCHWc blocked, cm_mlperf.tvm.layout) is part of the key too: its
kernels are other TIR functions, so a database of one layout has no records for the other.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cm_mlperf.files import atomic_write

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
DB_FILES = (WORKLOADS, RECORDS)
MANIFEST = "manifest.json"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
# --conv_layout values; "auto" takes the layout of the database that fits, preferring the first of LAYOUT_PREFERENCE
CONV_LAYOUT_CHOICES = ("auto", "nchwc", "nchw")
LAYOUT_PREFERENCE = ("NCHWc", "NCHW")
DEFAULT_CONV_LAYOUT = "NCHWc"  # for tuning from zero and untuned builds


class TuningDatabaseError(ValueError):
    """A database path or file that cannot be used; the message says what to do."""


def is_archive(path: str | os.PathLike[str]) -> bool:
    return str(path).endswith(ARCHIVE_SUFFIXES)


def check_folder(folder: str | os.PathLike[str], flag: str = "--tuning_db") -> Path:
    """The folder if it holds both database files, else TuningDatabaseError naming the flag."""
    folder = Path(folder)
    if not folder.exists():
        raise TuningDatabaseError(f"{flag}={folder}: no such file or folder; give a tuning database folder or a "
                                  f".tar.gz made by `cm run script --tags=export,tvm,tuning-db`")
    if not folder.is_dir():
        raise TuningDatabaseError(f"{flag}={folder} is a file but not a .tar.gz: give the database folder or its "
                                  f".tar.gz export")
    missing = [n for n in DB_FILES if not (folder / n).is_file()]
    if missing:
        raise TuningDatabaseError(f"{flag}={folder} is not a MetaSchedule JSON database: {', '.join(missing)} "
                                  f"missing (a database holds {' + '.join(DB_FILES)})")
    return folder


def content_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of what a database holds (its two JSON files, or the archive's bytes): the compile cache keys on it."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else [path / n for n in DB_FILES]
    for file in files:
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The folder's manifest.json, or {} when it has none (a plain tune-tvm-model database)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise TuningDatabaseError(f"{path} is not JSON ({e}): the database's manifest is damaged") from e


def unpack(archive: str | os.PathLike[str], dst: str | os.PathLike[str], flag: str = "--tuning_db") -> Path:
    """Extract a database .tar.gz into dst (regular files only, no paths outside dst); returns the database folder."""
    archive, dst = Path(archive), Path(dst)
    if not archive.is_file():
        raise TuningDatabaseError(f"{flag}={archive}: no such file")
    dst.mkdir(parents=True, exist_ok=True)
    wanted = set(DB_FILES) | {MANIFEST}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and Path(m.name).name in wanted]
            for member in members:  # flattened: the archive's folder name does not matter
                src = tar.extractfile(member)
                assert src is not None
                with atomic_write(dst / Path(member.name).name, "wb") as out:
                    shutil.copyfileobj(src, out)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise TuningDatabaseError(f"{flag}={archive} is not a readable .tar.gz ({e}); export it again") from e
    return check_folder(dst, flag)


def _records(folder: Path) -> Iterable[tuple[int, list[Any]]]:
    for n, line in enumerate((folder / RECORDS).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            index, body = json.loads(line)
        except ValueError as e:
            raise TuningDatabaseError(f"{folder / RECORDS} line {n} is not a tuning record ({e})") from e
        yield int(index), body


def _mean_seconds(body: list[Any]) -> float | None:
    secs = [float(s) for s in (body[1] or [])]
    return sum(secs) / len(secs) if secs else None


def best_records(folder: str | os.PathLike[str]) -> dict[int, list[Any]]:
    """Workload line index -> its fastest measured record (failed measurements have no run seconds)."""
    best: dict[int, tuple[float, list[Any]]] = {}
    for index, body in _records(Path(folder)):
        secs = _mean_seconds(body)
        if secs is None or secs >= 1e9:
            continue
        if index not in best or secs < best[index][0]:
            best[index] = (secs, body)
    return {i: body for i, (_, body) in best.items()}


def prune(src: str | os.PathLike[str], dst: str | os.PathLike[str],
          target: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Write into dst the best record of each workload and only the workloads they use; with `target`, every kept
    record's target becomes it (retargeting: the record then says which CPU it serves). src may equal dst."""
    src, dst = check_folder(src), Path(dst)
    workloads = [ln for ln in (src / WORKLOADS).read_text().splitlines() if ln.strip()]
    best = best_records(src)
    dst.mkdir(parents=True, exist_ok=True)
    kept = sorted(best)
    new_index = {old: new for new, old in enumerate(kept)}
    record_lines = []
    for old in kept:
        body = list(best[old])
        if target is not None:
            body[2] = {"keys": ["cpu"], "tag": "", **dict(target)}
        record_lines.append(json.dumps([new_index[old], body]))
    with atomic_write(dst / WORKLOADS) as f:
        f.write("".join(workloads[old] + "\n" for old in kept))
    with atomic_write(dst / RECORDS) as f:
        f.write("".join(line + "\n" for line in record_lines))
    return {"workloads": len(kept), "records": len(record_lines), "workloads_before": len(workloads)}


def per_task_best(folder: str | os.PathLike[str], info: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """[{task, best_us, trials}] from tune-tvm-model's tuning-info.json or refine's refine-info.json (its `us`: the
    chosen schedule's time) when given, else by workload index."""
    if info and info.get("per_task"):
        rows = []
        for t in info["per_task"]:
            seconds = t.get("database_best_seconds") or t.get("best_seconds")
            rows.append({"task": t.get("task"), "best_us": _us(seconds) if seconds is not None else t.get("us"),
                         "trials": t.get("trials")})
        return rows
    return [{"task": f"workload-{i}", "best_us": _us(_mean_seconds(body)), "trials": None}
            for i, body in sorted(best_records(folder).items())]


def _us(seconds: float | None) -> float | None:
    return None if seconds is None else round(float(seconds) * 1e6, 2)


def normalise_layout(raw: str, flag: str = "--conv_layout") -> str:
    """'auto' -> '' (decide from the databases), 'nchw'/'nchwc' in any case -> 'NCHW'/'NCHWc'."""
    value = (raw or "auto").strip().lower()
    if value == "auto":
        return ""
    for layout in LAYOUT_PREFERENCE:
        if value == layout.lower():
            return layout
    raise TuningDatabaseError(f"{flag}={raw}: choose one of {', '.join(CONV_LAYOUT_CHOICES)} (nchwc: convolutions "
                              f"on channel blocks of one vector, as onnxruntime runs them; nchw: as imported)")


def database_layout(folder: str | os.PathLike[str]) -> str:
    """The convolution layout a database folder was tuned in: its manifest's, else its tuning-info.json's, else
    NCHW (databases made before the layout was recorded)."""
    folder = Path(folder)
    layout = read_manifest(folder).get("conv_layout")
    info = folder / "tuning-info.json"
    if not layout and info.is_file():
        try:
            layout = json.loads(info.read_text()).get("conv_layout")
        except ValueError:
            layout = None
    return layout or "NCHW"


def make_manifest(folder: str | os.PathLike[str], *, name: str, model_name: str, model_sha256: str, batch_size: int,
                  family: str, family_extras: Iterable[str] = (), conv_layout: str = "NCHW",
                  tuned_on: Mapping[str, Any] | None = None,
                  target: Mapping[str, Any] | None = None, tvm_version: str = "", trials: int | None = None,
                  tuning_seconds: float | None = None, info: Mapping[str, Any] | None = None,
                  extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write manifest.json into a (pruned) database folder and return it."""
    folder = check_folder(folder)
    counts = [sum(1 for ln in (folder / n).read_text().splitlines() if ln.strip()) for n in DB_FILES]
    manifest = {
        "name": name,
        "model_name": model_name,
        "model_sha256": model_sha256,
        "batch_size": int(batch_size),
        "conv_layout": conv_layout,
        "family": family,
        "family_extras": sorted(family_extras),
        "tuned_on": dict(tuned_on or {}),
        "target": dict(target or {}),
        "tvm_version": tvm_version,
        "trials": trials,
        "tuning_seconds": tuning_seconds,
        "date": _dt.date.today().isoformat(),
        "workloads": counts[0],
        "records": counts[1],
        "database_sha256": content_sha256(folder),
        "per_task": per_task_best(folder, info),
        **dict(extra or {}),
    }
    with atomic_write(folder / MANIFEST) as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return manifest


def history_totals(folder: str | os.PathLike[str], _depth: int = 0) -> dict[str, Any]:
    """{"trials", "tuning_seconds"} behind a database folder, over all the runs it grew from: its manifest's figures;
    else tune-tvm-model's tuning-info.json (its totals, or this run's figures plus those of the database it resumed
    from, followed back); else the number of records (seconds unknown: None)."""
    folder = Path(folder)
    manifest = read_manifest(folder) if folder.is_dir() else {}
    if manifest.get("trials") is not None:
        return {"trials": int(manifest["trials"]), "tuning_seconds": manifest.get("tuning_seconds")}
    info_path = folder / "tuning-info.json"
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except ValueError:
            info = {}
        if info.get("trials_total") is not None:
            return {"trials": int(info["trials_total"]), "tuning_seconds": info.get("tuning_seconds_total")}
        if info.get("trials_done") is not None:
            trials, secs = int(info["trials_done"]), info.get("tuning_seconds")
            base = (info.get("resumed") or {}).get("from")
            if base and Path(base).is_dir() and _depth < 20 and Path(base).resolve() != folder.resolve():
                before = history_totals(base, _depth + 1)
                trials += int(before["trials"] or 0)
                secs = None if secs is None or before["tuning_seconds"] is None else \
                    round(float(secs) + float(before["tuning_seconds"]), 1)
            return {"trials": trials, "tuning_seconds": secs}
    if (folder / "refine-info.json").is_file():  # refined only (cm_mlperf.tvm.refine): no search behind it
        return {"trials": 0, "tuning_seconds": 0.0}
    records = folder / RECORDS
    n = sum(1 for ln in records.read_text().splitlines() if ln.strip()) if records.is_file() else 0
    return {"trials": n, "tuning_seconds": None}


def write_archive(folder: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Pack a database folder (its two files and manifest) into a .tar.gz, atomically."""
    folder, out = check_folder(folder), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for n in (*DB_FILES, MANIFEST):
                if (folder / n).is_file():
                    tar.add(folder / n, arcname=f"{out.name.split('.')[0]}/{n}")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


# ----------------------------------------------------------------------------- choosing one

def _tvm_series(version: str) -> str:
    return ".".join(str(version).split(".")[:2])


def database_threads(manifest: Mapping[str, Any]) -> int:
    """The threads per inference a database's schedules were made and timed for (its target's num-cores)."""
    try:
        return int((manifest.get("target") or {}).get("num-cores") or 0)
    except (TypeError, ValueError):
        return 0


def find_shipped(root: str | os.PathLike[str], *, model_sha256: str, batch_size: int, family: str,
                 tvm_version: str = "", conv_layout: str = "",
                 threads: int = 0) -> tuple[Path | None, list[dict[str, Any]]]:
    """The shipped database under root for this model, batch, CPU family and convolution layout ("": any, the
    first of LAYOUT_PREFERENCE that has one); of those, one made for single-threaded inference when `threads` is
    1 and one made for several threads otherwise (0: unknown; their kernels carry no parallel loops, or do), else
    the other kind; then the one with most trials. Also the manifests of every shipped database (for the message when
    none fits)."""
    root = Path(root)
    manifests = []
    best: tuple[tuple[int, int], Path] | None = None
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        manifest = read_manifest(folder)
        if not manifest:
            continue
        manifests.append({**manifest, "path": str(folder)})
        if manifest.get("model_sha256") != model_sha256 or int(manifest.get("batch_size", 0)) != int(batch_size):
            continue
        if manifest.get("family") != family:
            continue
        if tvm_version and _tvm_series(manifest.get("tvm_version", "")) != _tvm_series(tvm_version):
            continue  # another TVM release hashes the TIR differently: its records would not be found
        layout = manifest.get("conv_layout") or "NCHW"
        if conv_layout and layout != conv_layout:
            continue
        rank = -LAYOUT_PREFERENCE.index(layout) if layout in LAYOUT_PREFERENCE else -len(LAYOUT_PREFERENCE)
        fits_threads = (database_threads(manifest) == 1) == (int(threads) == 1)
        score = (rank, fits_threads, int(manifest.get("trials") or 0))
        if best is None or score > best[0]:
            best = (score, folder)
    return (best[1] if best else None), manifests


def describe(manifest: Mapping[str, Any]) -> str:
    """One line: name, layout, trials, tuning time, where it was tuned."""
    minutes = manifest.get("tuning_seconds")
    when = f", {float(minutes) / 60:.0f} min" if minutes else ""
    on = manifest.get("tuned_on", {}).get("mcpu") or manifest.get("target", {}).get("mcpu") or "?"
    layout = manifest.get("conv_layout") or "NCHW"
    threads = database_threads(manifest)
    per = f", for {threads} thread{'s' if threads > 1 else ''} per inference" if threads else ""
    return f"{manifest.get('name', '?')} ({layout}{per}, {manifest.get('trials', '?')} trials{when}, tuned on {on})"


def tune_command(model_name: str, batch_size: int, conv_layout: str = "") -> str:
    """The command that tunes (and then applies) a database for this model, batch and layout."""
    model = "" if model_name in ("", "efficientnet-lite0") else f",_{model_name}"
    batch = "" if int(batch_size) == 1 else f" --batch_size={int(batch_size)}"
    layout = f" --conv_layout={conv_layout.lower()}" if conv_layout and conv_layout != DEFAULT_CONV_LAYOUT else ""
    return f"cm run script --tags=run-mlperf,inference,_tvm{model},_tune --tuning_trials=3000{batch}{layout}"


def choose(*, user_db: str, shipped_root: str | os.PathLike[str], model_name: str, model_sha256: str,
           batch_size: int, family: str, tvm_version: str = "", conv_layout: str = "auto",
           threads: int = 0) -> dict[str, str]:
    """The database a compile applies, as env: CM_TVM_TUNING_DB_PATH (folder or archive, "" for none),
    CM_TVM_TUNING_DB_SHA256 (content), CM_TVM_TUNING_DB_SOURCE (user, shipped, none), CM_TVM_TUNING_DB_NAME,
    CM_TVM_CONV_LAYOUT_USED (the layout to compile and tune in: the database's) and CM_TVM_TUNING_DB_NOTE (one
    line for the user). `user_db`: --tuning_db (a path, or "no" for untuned); `conv_layout`: --conv_layout;
    `threads`: the threads per inference the library is built for (0: no preference)."""
    wanted = normalise_layout(conv_layout)
    user_db = (user_db or "").strip()
    if user_db.lower() in ("no", "none", "off", "untuned"):
        return {"CM_TVM_TUNING_DB_PATH": "", "CM_TVM_TUNING_DB_SHA256": "", "CM_TVM_TUNING_DB_SOURCE": "none",
                "CM_TVM_TUNING_DB_NAME": "untuned", "CM_TVM_CONV_LAYOUT_USED": wanted or DEFAULT_CONV_LAYOUT,
                "CM_TVM_TUNING_DB_NOTE": "--tuning_db=no: compiling untuned"}
    if user_db:
        path = Path(user_db)
        if not is_archive(path):
            check_folder(path)
        elif not path.is_file():
            raise TuningDatabaseError(f"--tuning_db={path}: no such file")
        layout = database_layout(path) if path.is_dir() else _archive_layout(path)
        if wanted and wanted != layout:
            raise TuningDatabaseError(f"--conv_layout={conv_layout} but --tuning_db={path} was tuned with "
                                      f"{layout} convolutions: drop --conv_layout, or give a {wanted} database")
        name = read_manifest(path).get("name", "") if path.is_dir() else ""
        return {"CM_TVM_TUNING_DB_PATH": str(path.resolve()), "CM_TVM_TUNING_DB_SHA256": content_sha256(path),
                "CM_TVM_TUNING_DB_SOURCE": "user", "CM_TVM_TUNING_DB_NAME": name or path.name,
                "CM_TVM_CONV_LAYOUT_USED": layout, "CM_TVM_TUNING_DB_NOTE": f"applying the tuning database {path}"}
    found, manifests = find_shipped(shipped_root, model_sha256=model_sha256, batch_size=batch_size, family=family,
                                    tvm_version=tvm_version, conv_layout=wanted, threads=threads)
    if found is not None:
        manifest = read_manifest(found)
        return {"CM_TVM_TUNING_DB_PATH": str(found.resolve()), "CM_TVM_TUNING_DB_SHA256": content_sha256(found),
                "CM_TVM_TUNING_DB_SOURCE": "shipped", "CM_TVM_TUNING_DB_NAME": manifest.get("name", found.name),
                "CM_TVM_CONV_LAYOUT_USED": manifest.get("conv_layout") or "NCHW",
                "CM_TVM_TUNING_DB_NOTE": f"applying the shipped tuning database {describe(manifest)}"}
    layout = wanted or DEFAULT_CONV_LAYOUT
    same_model = [m["name"] for m in manifests if m.get("model_sha256") == model_sha256]
    have = f" (shipped for this model: {', '.join(same_model)})" if same_model else ""
    return {"CM_TVM_TUNING_DB_PATH": "", "CM_TVM_TUNING_DB_SHA256": "", "CM_TVM_TUNING_DB_SOURCE": "none",
            "CM_TVM_TUNING_DB_NAME": "untuned", "CM_TVM_CONV_LAYOUT_USED": layout,
            "CM_TVM_TUNING_DB_NOTE": f"no tuning database for {model_name or 'this model'} at batch {batch_size} "
                                     f"({layout}) on a {family} CPU{have}: TVM runs untuned (our default schedule, no "
                                     f"search); tune one with: "
                                     f"{tune_command(model_name, batch_size, layout)}"}


def _archive_layout(path: Path) -> str:
    """database_layout() of a .tar.gz export, read from its manifest without unpacking the rest."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar.getmembers():
                if member.isfile() and Path(member.name).name == MANIFEST:
                    data = tar.extractfile(member)
                    if data is not None:
                        return json.loads(data.read().decode()).get("conv_layout") or "NCHW"
    except (OSError, tarfile.TarError, ValueError) as e:
        raise TuningDatabaseError(f"--tuning_db={path}: not a readable .tar.gz ({e})") from e
    return "NCHW"
