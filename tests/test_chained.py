"""Chained experiments (params.yaml's `chained:`, Experiment.init_from): study 004 trained SGD and
then RMSprop on top of its Adam-trained model. A chained experiment starts from the named
experiment's final weights, with a fresh optimizer, and its train stage depends on that model
in DVC's graph, so retraining the parent retrains the chain."""

import copy
import subprocess
import sys

import pytest
import torch
from import_closure import ROOT
from test_evaluation import tiny_cifar
from test_study_switches import tiny_params_dict

from cnnlab import paths
from cnnlab.config import ParamsError, parse_params
from cnnlab.data.prepared import save_prepared
from cnnlab.errors import CnnlabError
from cnnlab.train.stage import train_experiment


def chain_params(**chained_changes):
    data = tiny_params_dict()
    data["experiments"]["ann"]["epochs"] = 1
    child = copy.deepcopy(data["experiments"]["ann"])
    child.update(init_from="ann", optimizer={"name": "sgd", "lr": 1e-12}, seed=9)
    child.update(chained_changes)
    data["chained"] = {"ann_chained": child}
    return data


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["experiments"]["ann"].update(init_from="ann"),
     "experiments.ann.init_from: an experiment that starts from another one's model goes "
     "under chained:"),
    (lambda d: d["chained"]["ann_chained"].update(init_from="nope"),
     r"chained.ann_chained.init_from: 'nope' is not another experiment \(choose from: ann\)"),
    (lambda d: d["chained"]["ann_chained"].update(init_from="ann_chained"),
     "chained.ann_chained.init_from: 'ann_chained' is not another experiment"),
    (lambda d: d["chained"]["ann_chained"].update(model="cnn"),
     "chained.ann_chained.init_from: ann trains ann on cifar10, this experiment cnn on cifar10"),
    (lambda d: d["chained"].update(ann=d["chained"]["ann_chained"]),
     "chained.ann: also defined under experiments"),
    (lambda d: d["chained"].update(
        a={**d["chained"]["ann_chained"], "init_from": "b"},
        b={**d["chained"]["ann_chained"], "init_from": "a"}),
     r"chained.a.init_from: a cycle \(a -> b -> a\)"),
])
def test_a_broken_chain_is_a_one_line_error(edit, message):
    data = chain_params()
    edit(data)
    with pytest.raises(ParamsError, match=message):
        parse_params(data)


def test_a_chained_run_starts_from_the_parents_final_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_prepared(tiny_cifar(), paths.prepared_dir("cifar10"))
    params = parse_params(chain_params())
    with pytest.raises(CnnlabError, match="data/models/ann/final.pt not found: this experiment "
                                          "starts from ann's trained model"):
        train_experiment(params, "ann_chained")
    train_experiment(params, "ann")
    train_experiment(params, "ann_chained")
    parent = torch.load(paths.model_checkpoint("ann"), weights_only=True)
    child = torch.load(paths.model_checkpoint("ann_chained"), weights_only=True)
    # An lr of 1e-12 moves nothing visibly: the child holds the parent's weights, not its own
    # seed's initialisation (which differs from the parent's by far more).
    for key in parent:
        torch.testing.assert_close(child[key], parent[key], rtol=0, atol=1e-6)
    data = chain_params()
    fresh = data["chained"].pop("ann_chained")
    fresh.pop("init_from")
    data["experiments"]["fresh"] = fresh
    train_experiment(parse_params(data), "fresh")
    own = torch.load(paths.model_checkpoint("fresh"), weights_only=True)
    assert any((own[k] - parent[k]).abs().max() > 1e-3 for k in parent)


def test_dvc_orders_each_chained_training_after_the_model_it_starts_from():
    """The real pipeline's graph, from `dvc dag`: Adam, then SGD on it, then RMSprop on that."""
    dag = subprocess.run([sys.executable, "-m", "dvc", "dag", "--md",
                          "train_chained@dropcnn_rmsprop_chained"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    nodes = dict(line.strip().rstrip('"]').split('["') for line in dag.splitlines()
                 if '["' in line)
    edges = {tuple(nodes[n] for n in line.strip().split("-->")) for line in dag.splitlines()
             if "-->" in line}
    assert ("train@dropcnn_adam", "train_chained@dropcnn_sgd_chained") in edges
    assert ("train_chained@dropcnn_sgd_chained",
            "train_chained@dropcnn_rmsprop_chained") in edges
