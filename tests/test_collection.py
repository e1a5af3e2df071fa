"""Every script in the collection loads, validates and is uniquely named; tags reach them."""
from __future__ import annotations

from cm_script_engine.search import ScriptIndex
from conftest import REPO_ROOT


def test_every_script_validates_and_is_unique():
    scripts = ScriptIndex([str(REPO_ROOT)]).scripts
    folders = sorted(p.name for p in (REPO_ROOT / "script").iterdir() if p.is_dir())
    assert sorted(s.alias for s in scripts) == folders  # alias = folder name, and every folder is a script
    uids = [s.uid for s in scripts]
    assert len(set(uids)) == len(uids) and all(len(u) == 16 for u in uids)


def test_dependency_tags_of_the_main_chain_resolve_to_one_script():
    index = ScriptIndex([str(REPO_ROOT)])
    for tags in ("detect,os", "detect,cpu", "get,ml-model,efficientnet-lite0", "get,ml-model,resnet50",
                 "get,ml-model,custom", "get,dataset,imagenet,original,sample", "get,dataset,imagenet,original,val",
                 "get,dataset,imagenet,preprocessed", "get,tvm", "compile,tvm,model", "app,mlperf,inference,python",
                 "run,mlperf,accuracy,process,imagenet", "run-mlperf,inference"):
        assert index.find_one(tags.split(",")) is not None, tags
