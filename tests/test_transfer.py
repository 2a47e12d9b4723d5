"""The transfer models: the study's freezing, and each place their starting weights come from.

Most tests use resnet18_tl: VGG16 is 528 MB, so it is built once here (and once in
test_models.py). No test touches the network: ImageNet weights come from a pre-filled torch.hub
cache, a local HTTP server, or a patched download that fails.
"""

import os
import urllib.error
import urllib.parse
import urllib.request

import httpserver
import pytest
import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from cnnlab.errors import CnnlabError
from cnnlab.models import accepts_weights, build_model, count_params

http_server = httpserver.http_server  # the fixture, assigned rather than imported (see its doc)

RESNET_URL = ResNet18_Weights.DEFAULT.url
CACHE_NAME = os.path.basename(RESNET_URL)  # what torch.hub names the cached download


@pytest.fixture(scope="module")
def imagenet_state():
    """A state dict in torchvision's ImageNet layout with a few tensors set to known values."""
    torch.manual_seed(0)
    state = resnet18(weights=None).state_dict()  # random init, 1000-class head
    # Known values in a frozen stem, a frozen BN buffer, a trainable block and the old head,
    # so a test can tell "loaded from the file" from "initialised at random".
    state["conv1.weight"] = torch.linspace(-1, 1, state["conv1.weight"].numel()).view(64, 3, 7, 7)
    state["layer1.0.bn1.running_mean"] = torch.full((64,), 0.25)
    state["layer4.1.conv2.weight"] = torch.full_like(state["layer4.1.conv2.weight"], 0.125)
    state["fc.weight"] = torch.full((1000, 512), 3.0)
    return state


@pytest.fixture(scope="module")
def weights_file(imagenet_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet18-imagenet.pth"
    torch.save(imagenet_state, path)
    return path


def assert_loaded(model, state):
    """Every tensor but the replaced head equals the file's; the head is a new 10-way Linear."""
    loaded = model.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(loaded[key], value), key
    assert isinstance(model.fc, nn.Linear)
    assert (model.fc.in_features, model.fc.out_features) == (512, 10)
    assert model.fc.weight.requires_grad and not torch.all(model.fc.weight == 3.0)


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


# --- freezing, as study 001 did it -----------------------------------------------------------


def test_vgg16_tl_trains_the_last_conv_block_and_the_classifier():
    model = build_model("vgg16_tl", 10)
    # features[24:] = conv5_1, conv5_2, conv5_3 (indices 24, 26, 28; the rest are ReLU/pool),
    #   each 512*512*3*3 + 512 = 2,359,808 -> 3 x 2,359,808 = 7,079,424
    # classifier: 25088*4096+4096 = 102,764,544; 4096*4096+4096 = 16,781,312;
    #   new head 4096*10+10 = 40,970 -> 119,586,826
    # trainable: 7,079,424 + 119,586,826 = 126,666,250 of 134,301,514
    assert count_params(model, trainable_only=True) == 126_666_250
    assert count_params(model) == 134_301_514
    convs = ("features.24.", "features.26.", "features.28.", "classifier.")
    for name, p in model.named_parameters():
        assert p.requires_grad == name.startswith(convs), name
    assert isinstance(model.classifier[6], nn.Linear)
    assert (model.classifier[6].in_features, model.classifier[6].out_features) == (4096, 10)


def test_resnet18_tl_trains_layer4_and_the_new_head():
    model = build_model("resnet18_tl", 10)
    # layer4, block 0: conv1 256*512*9 = 1,179,648; conv2 512*512*9 = 2,359,296;
    #   downsample 1x1 256*512 = 131,072; three BNs 3 x 2*512 = 3,072 -> 3,673,088
    # layer4, block 1: two convs 2 x 2,359,296 + two BNs 2 x 1,024 -> 4,720,640
    # new fc: 512*10+10 = 5,130
    # trainable: 3,673,088 + 4,720,640 + 5,130 = 8,398,858 of 11,181,642
    assert count_params(model, trainable_only=True) == 8_398_858
    assert count_params(model) == 11_181_642
    for name, p in model.named_parameters():
        assert p.requires_grad == name.startswith(("layer4.", "fc.")), name


def test_resnet18_tl_backward_reaches_only_the_trainable_parameters():
    """At the study's 224x224 input, autograd leaves the frozen layers without gradients."""
    model = build_model("resnet18_tl", 10).eval()
    out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 10)
    out.sum().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name


# --- weights from a local file ---------------------------------------------------------------


def test_local_weights_file_is_loaded_before_the_head_is_replaced(weights_file, imagenet_state):
    model = build_model("resnet18_tl", 10, weights=str(weights_file))
    assert_loaded(model, imagenet_state)
    # Freezing does not depend on where the weights came from.
    assert count_params(model, trainable_only=True) == 8_398_858
    assert trainable_names(model) == trainable_names(build_model("resnet18_tl", 10))


def _missing_key(state, tmp_path):
    state = dict(state)
    del state["layer1.0.conv1.weight"]
    torch.save(state, tmp_path / "w.pth")


def _ten_class_head(state, tmp_path):
    # A cnnlab checkpoint (10-way head) is not an ImageNet state dict.
    torch.save({**state, "fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)},
               tmp_path / "w.pth")


def _wrapped(state, tmp_path):
    torch.save({"epoch": 3, "state_dict": dict(state)}, tmp_path / "w.pth")


def _text(state, tmp_path):
    (tmp_path / "w.pth").write_text("these are not weights\n")


def _tensor(state, tmp_path):
    torch.save(torch.zeros(3), tmp_path / "w.pth")


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (None, r"weights file '.*nope\.pth' for resnet18_tl does not exist \(weights must be "
               r"'imagenet', 'none' or the path of a state dict file"),
        (_text, r"weights file '.*w\.pth' for resnet18_tl is not a torch state dict \("),
        (_tensor, r"weights file '.*w\.pth' for resnet18_tl holds a Tensor, not a state dict"),
        (_wrapped, r"is not a plain state dict: entry 'epoch' is a int, not a tensor"),
        (_missing_key, r"weights file '.*w\.pth' for resnet18_tl do not match torchvision's "
                       r"ImageNet layout \(as published at https://.*resnet18-.*\.pth\): "
                       r"1 missing key\(s\), first 'layer1\.0\.conv1\.weight'$"),
        (_ten_class_head, r"'fc\.weight' has shape \[10, 512\] in the file but \[1000, 512\]"),
    ],
    ids=["missing-path", "text-file", "bare-tensor", "wrapped", "missing-key", "10-way-head"],
)
def test_bad_local_weights_file_is_one_clear_line(write, message, imagenet_state, tmp_path):
    path = tmp_path / ("w.pth" if write else "nope.pth")
    if write:
        write(imagenet_state, tmp_path)
    with pytest.raises(CnnlabError, match=message) as info:
        build_model("resnet18_tl", 10, weights=str(path))
    assert "\n" not in str(info.value)


# --- ImageNet weights through torchvision and torch.hub --------------------------------------


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch.hub cache; torch.hub reads TORCH_HOME on every call."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path / "hub" / "checkpoints"


def test_imagenet_weights_come_from_torch_hub_cache(torch_home, imagenet_state, monkeypatch):
    torch_home.mkdir(parents=True)
    torch.save(imagenet_state, torch_home / CACHE_NAME)

    def no_download(*args, **kwargs):
        raise AssertionError("the cached file should have been used")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    model = build_model("resnet18_tl", 10, weights="imagenet")
    assert_loaded(model, imagenet_state)
    assert count_params(model, trainable_only=True) == 8_398_858


def test_imagenet_weights_offline_says_how_to_supply_a_file(torch_home, monkeypatch):
    def no_route(url, dst, *args, **kwargs):
        raise urllib.error.URLError("no route")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_route)
    with pytest.raises(CnnlabError) as info:
        build_model("resnet18_tl", 10, weights="imagenet")
    message = str(info.value)
    assert message.startswith(
        f"the ImageNet weights for resnet18_tl could not be fetched from {RESNET_URL} "
        f"(URLError: <urlopen error no route>); "
    )
    assert "download that URL on a connected machine" in message
    assert "experiments.<exp>.weights" in message and "`weights: none`" in message
    assert "\n" not in message


@pytest.fixture
def mirror(http_server, monkeypatch):
    """Send torch.hub's real download (urllib, hash check, temp file) to the local server.

    The weights' URL is fixed in torchvision's enum, so the redirect happens at urlopen: the
    request path stays download.pytorch.org's, only host and port change.
    """
    real_urlopen = urllib.request.urlopen

    def to_local(request, *args, **kwargs):
        path = urllib.parse.urlsplit(request.full_url).path
        return real_urlopen(http_server.url(path), *args, **kwargs)

    monkeypatch.setattr(torch.hub, "urlopen", to_local)
    return http_server


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("500", r"HTTPError: HTTP Error 500"),
        # torch.hub does not check Content-Length: a cut body is caught by the hash check.
        ("cut", r"RuntimeError: invalid hash value \(expected \"f37072fd\""),
        ("wrong-bytes", r"RuntimeError: invalid hash value \(expected \"f37072fd\""),
    ],
)
def test_failed_imagenet_download_leaves_nothing_in_the_cache(fault, reason, mirror, torch_home):
    path = urllib.parse.urlsplit(RESNET_URL).path
    mirror.add(path, b"not the published weights" * 1000)  # its sha256 cannot match the name
    if fault == "500":
        mirror.fail(path, times=1, status=500)
    elif fault == "cut":
        mirror.cut(path, times=1)
    with pytest.raises(CnnlabError, match=rf"could not be fetched from {RESNET_URL} \({reason}"):
        build_model("resnet18_tl", 10, weights="imagenet")
    assert mirror.count(path) == 1  # the real download ran, once
    assert os.listdir(torch_home) == []  # no partial or unverified file to trip the next run


def test_unreadable_cached_imagenet_file_is_named(torch_home):
    torch_home.mkdir(parents=True)
    (torch_home / CACHE_NAME).write_text("garbage")
    with pytest.raises(CnnlabError, match=r"the cached ImageNet weights for resnet18_tl at .*"
                                          r"could not be read .*delete that file"):
        build_model("resnet18_tl", 10, weights="imagenet")


# --- which models take weights ---------------------------------------------------------------


def test_only_transfer_models_accept_weights():
    assert accepts_weights("vgg16_tl") and accepts_weights("resnet18_tl")
    assert not accepts_weights("cnn")
    with pytest.raises(CnnlabError, match=r"unknown model 'vgg99'"):
        accepts_weights("vgg99")


def test_from_scratch_model_refuses_weights():
    with pytest.raises(CnnlabError, match=r"^model 'cnn' trains from scratch and takes no weights "
                                          r"\(got weights 'imagenet'\); models that accept "
                                          r"weights: resnet18_tl, vgg16_tl$"):
        build_model("cnn", 10, weights="imagenet")
    assert isinstance(build_model("cnn", 10, weights="none"), nn.Module)
