"""The prototype alias of DFG networks: nnU-Net's own ``load_pretrained_weights`` transfers the classifier, and
checkpoints written before the alias existed still load strictly (as ``nnUNetv2_predict`` loads them)."""
from __future__ import annotations

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

from nnunet_dfg.trainers.network_parts import PROTOTYPE_HEAD, dfg_heads, prototypes, weights_were_loaded


def _network() -> torch.nn.Module:
    return dfg_heads(PlainConvUNet(1, 3, (8, 16, 32), torch.nn.Conv2d, 3, (1, 2, 2), (2, 2, 2), 5, (2, 2), False,
                                   torch.nn.InstanceNorm2d, None, None, None, torch.nn.LeakyReLU))


def test_heads_are_bias_free_and_the_classifier_has_a_second_name():
    net = _network()
    assert all(head.bias is None for head in net.decoder.seg_layers)
    assert getattr(net, PROTOTYPE_HEAD) is net.decoder.seg_layers[-1]
    keys = net.state_dict().keys()
    assert f"{PROTOTYPE_HEAD}.weight" in keys and "decoder.seg_layers.1.weight" in keys
    assert len(list(net.parameters())) == len({id(p) for p in net.parameters()})  # no parameter counted twice


def test_nnunets_loader_transfers_the_prototypes(tmp_path):
    source, target = _network(), _network()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    ckpt = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": source.state_dict()}, ckpt)
    assert not weights_were_loaded(target) and not torch.equal(prototypes(target), prototypes(source))
    load_pretrained_weights(target, str(ckpt))
    assert weights_were_loaded(target)
    low_resolution_heads = ("decoder.seg_layers.0.",)  # deep-supervision heads: unused by the adaptation trainers
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value) != key.startswith(low_resolution_heads), key


def test_checkpoints_without_the_alias_load_strictly():
    source = _network()
    old = {k: v for k, v in source.state_dict().items() if not k.startswith(PROTOTYPE_HEAD)}
    target = _network()
    target.load_state_dict(old, strict=True)
    assert torch.equal(prototypes(target), prototypes(source))
