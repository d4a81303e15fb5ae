"""replace_activations on a torchvision-free ResNet-style model and on models with functional
calls: outputs equal a hand-built model with the new activation; report right; input untouched."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import relulab
from relulab.errors import UserError
from relulab.sites import module_sites


class BasicBlock(nn.Module):
    def __init__(self, channels: int, act=None):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act1 = act() if act else nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.out_act = act() if act else None  # the original applies F.relu after the sum

    def forward(self, x):
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        out = out + x
        return self.out_act(out) if self.out_act is not None else F.relu(out)


class TinyResNet(nn.Module):
    def __init__(self, act=None):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), act() if act else nn.ReLU()
        )
        self.layer1 = nn.Sequential(BasicBlock(8, act), BasicBlock(8, act))
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.layer1(self.stem(x))
        return self.head(x.mean((2, 3)))


def _twin(original: nn.Module, act) -> nn.Module:
    """The same network built by hand with ``act`` everywhere, with the original's weights."""
    twin = TinyResNet(act)
    twin.load_state_dict(original.state_dict())
    return twin.eval()


@pytest.fixture
def resnet():
    model = TinyResNet().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


def test_resnet_relus_become_golu_modules_and_calls_alike(resnet):
    x = torch.randn(2, 3, 8, 8)
    before = copy.deepcopy(resnet.state_dict())
    expected_before = resnet(x)
    new, report = relulab.replace_activations(resnet, "relu", "golu")
    torch.testing.assert_close(new(x), _twin(resnet, relulab.GoLU)(x), rtol=0, atol=0)
    modules = sorted(r.path for r in report.replaced if r.kind == "module")
    assert modules == ["layer1.0.act1", "layer1.1.act1", "stem.2"]
    assert len([r for r in report.replaced if r.kind == "call"]) == 2  # the F.relu after each sum
    assert {(r.old, r.new) for r in report.replaced} == {
        ("relu", "golu(scale=1.0, shift=1.0, growth=1.0, trainable=False)")
    }
    # the input model is untouched
    assert all(type(s.module) is nn.ReLU for s in module_sites(resnet))
    assert all(torch.equal(before[k], v) for k, v in resnet.state_dict().items())
    torch.testing.assert_close(resnet(x), expected_before, rtol=0, atol=0)


def test_modules_only_keeps_the_model_class(resnet):
    new, report = relulab.replace_activations(resnet, nn.ReLU, "mish", functional=False)
    assert type(new) is TinyResNet and len(report) == 3
    assert isinstance(new.stem[2], relulab.Mish)


def test_inplace_modifies_the_given_model(resnet):
    new, _ = relulab.replace_activations(resnet, "relu", "silu", inplace=True, functional=False)
    assert new is resnet and isinstance(resnet.layer1[0].act1, relulab.SiLU)


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3, self.fc4 = (nn.Linear(6, 6) for _ in range(4))

    def forward(self, x):
        a = F.relu(self.fc1(x))
        b = torch.relu(self.fc2(a))
        c = self.fc3(b).relu()
        d = F.leaky_relu(c, 0.2)
        e = F.gelu(self.fc4(d), approximate="tanh")
        return torch.tanh(e) + a


class FunctionalByHand(Functional):
    def __init__(self, relu, leaky, gelu, tanh):
        super().__init__()
        self.relu, self.leaky, self.gelu, self.tanh = relu, leaky, gelu, tanh

    def forward(self, x):
        a = self.relu(self.fc1(x))
        b = self.relu(self.fc2(a))
        c = self.relu(self.fc3(b))
        d = self.leaky(c)
        e = self.gelu(self.fc4(d))
        return self.tanh(e) + a


def _by_hand(
    model,
    relu=torch.relu,
    leaky=lambda t: F.leaky_relu(t, 0.2),
    gelu=lambda t: F.gelu(t, approximate="tanh"),
    tanh=torch.tanh,
):
    twin = FunctionalByHand(relu, leaky, gelu, tanh)
    twin.load_state_dict(model.state_dict())
    return twin


def test_functional_relu_calls_of_every_form_are_replaced():
    model = Functional()
    x = torch.randn(5, 6)
    new, report = relulab.replace_activations(model, "relu", "smelu(beta=0.5)")
    assert isinstance(new, torch.fx.GraphModule)
    assert [r.kind for r in report.replaced] == ["call"] * 3
    torch.testing.assert_close(new(x), _by_hand(model, relu=relulab.SmeLU(0.5))(x), rtol=0, atol=0)


def test_a_module_class_also_matches_the_equivalent_calls():
    model = Functional()
    x = torch.randn(5, 6)
    new, report = relulab.replace_activations(model, nn.ReLU, "gelu")
    assert [(r.kind, r.old) for r in report.replaced] == [("call", "relu")] * 3
    torch.testing.assert_close(new(x), _by_hand(model, relu=relulab.GELU())(x), rtol=0, atol=0)


def test_sites_carry_their_arguments_so_a_spec_rebuilds_them_exactly():
    model = Functional()
    x = torch.randn(5, 6)
    # Replace every site by relulab's own version of what was there.
    new, report = relulab.replace_activations(
        model, "*", lambda site: relulab.get_activation(site.spec)
    )
    assert sorted(r.old for r in report.replaced) == sorted(
        ["relu", "relu", "relu", "leaky_relu(negative_slope=0.2)", "gelu_tanh", "tanh"]
    )
    torch.testing.assert_close(new(x), model(x), rtol=1e-6, atol=1e-7)


def test_predicates_select_sites():
    model = Functional()
    _, report = relulab.replace_activations(
        model, lambda site: site.activation in {"tanh", "gelu_tanh"}, "identity"
    )
    assert sorted(r.old for r in report.replaced) == ["gelu_tanh", "tanh"]


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.fc(x)
        F.relu(h, inplace=True)  # h itself is now activated
        return self.out(h)


def test_in_place_calls_keep_their_meaning():
    model = InPlace()
    x = torch.randn(3, 4)
    new, report = relulab.replace_activations(model, "relu", "golu")
    assert len(report) == 1
    want = model.out(relulab.GoLU()(model.fc(x)))
    torch.testing.assert_close(new(x), want, rtol=0, atol=0)


def test_timm_activation_classes_are_recognised_by_name():
    GELUTanh = type(
        "GELUTanh", (nn.Module,), {"forward": lambda self, x: F.gelu(x, approximate="tanh")}
    )
    GELUTanh.__module__ = "timm.layers.activations"
    model = nn.Sequential(nn.Linear(3, 3), GELUTanh())
    new, report = relulab.replace_activations(model, "gelu_tanh", "xgelu")
    assert [r.old for r in report.replaced] == ["gelu_tanh"] and isinstance(new[1], relulab.XGELU)


def test_torch_module_arguments_appear_in_the_report():
    model = nn.Sequential(
        nn.LeakyReLU(0.3), nn.GELU(approximate="tanh"), nn.ELU(alpha=2.0), nn.Softplus(beta=2.0)
    )
    _, report = relulab.replace_activations(model, "*", "relu")
    assert [r.old for r in report.replaced] == [
        "leaky_relu(negative_slope=0.3)",
        "gelu_tanh",
        "elu(alpha=2.0)",
        "softplus(beta=2.0, threshold=20.0)",
    ]


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace this
            return self.act(x)
        return F.relu(-x)


def test_untraceable_models_still_get_their_modules_replaced():
    new, report = relulab.replace_activations(Branchy(), "relu", "mish")
    assert isinstance(new.act, relulab.Mish) and len(report) == 1
    assert report.trace_error and "functional calls not examined" in str(report)


def test_a_shared_module_stays_shared():
    shared = nn.ReLU()
    model = nn.Sequential(nn.Linear(2, 2), shared, nn.Linear(2, 2), shared)
    new, report = relulab.replace_activations(model, "relu", "prelu", functional=False)
    assert new[1] is new[3] and isinstance(new[1], relulab.PReLU)
    assert sorted(r.path for r in report.replaced) == ["1", "3"]


def test_the_model_itself_can_be_the_activation():
    new, report = relulab.replace_activations(nn.ReLU(), "relu", "gelu")
    assert isinstance(new, relulab.GELU) and len(report) == 1


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("rleu", "gelu", "did you mean 'relu'"),
        ("relu", "gleu", "unknown activation 'gleu'"),
        ("zzz*", "gelu", "matches no activation"),
        (3, "gelu", "old must be"),
        ("relu", 3, "new must be"),
    ],
)
def test_bad_requests_fail_before_the_model_is_touched(resnet, old, new, message):
    with pytest.raises(ValueError, match=message):
        relulab.replace_activations(resnet, old, new, inplace=True)
    assert all(type(s.module) is nn.ReLU for s in module_sites(resnet))


@pytest.mark.parametrize("model", [F.relu, None, {"act": nn.ReLU()}])
def test_a_model_that_is_not_a_module_is_a_user_error(model):
    with pytest.raises(UserError, match=r"model must be an nn\.Module, got"):
        relulab.replace_activations(model, "relu", "gelu")


def test_identity_placeholders_are_not_activations():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.norm, self.drop, self.act = (
                nn.Linear(3, 3),
                nn.Identity(),
                nn.Identity(),
                nn.GELU(),
            )

        def forward(self, x):
            return self.drop(self.act(self.norm(self.fc(x))))

    new, report = relulab.replace_activations(Block(), "*", "relu")
    assert [r.path for r in report.replaced] == ["act"]
    assert type(new.norm) is nn.Identity and type(new.drop) is nn.Identity


class ViewInPlace(nn.Module):
    def forward(self, x):
        y = x * 1
        y[:, :2].relu_()  # in place on a view: y's first two columns change
        return y


def test_an_in_place_call_on_a_view_still_writes_through():
    x = torch.randn(4, 3)
    new, report = relulab.replace_activations(ViewInPlace(), "relu", "leaky_relu(0.5)")
    assert len(report) == 1
    expected = x.clone()
    expected[:, :2] = torch.where(x[:, :2] >= 0, x[:, :2], 0.5 * x[:, :2])
    torch.testing.assert_close(new(x), expected, rtol=0, atol=0)


class InPlaceFunctions(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        h = self.fc(x)
        torch.relu_(h)
        return h * 2


def test_in_place_functions_are_recognised():
    model = InPlaceFunctions()
    x = torch.randn(5, 3)
    new, report = relulab.replace_activations(model, "relu", "silu")
    assert [(r.kind, r.old) for r in report.replaced] == [("call", "relu")]
    torch.testing.assert_close(new(x), F.silu(model.fc(x)) * 2, rtol=0, atol=0)


class Double(nn.Module):
    def forward(self, x):
        return 2 * F.relu(x)


def test_the_replacement_itself_is_not_traced_into():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3))
    x = torch.randn(4, 3)
    new, report = relulab.replace_activations(model, "relu", Double())
    assert [(r.path, r.kind) for r in report.replaced] == [("1", "module")]
    torch.testing.assert_close(new(x), model[2](2 * F.relu(model[0](x))), rtol=0, atol=0)


def test_torch_and_relulab_classes_match_each_other_by_name():
    model = nn.Sequential(nn.ReLU(), relulab.ReLU(), nn.GELU())
    for old in (nn.ReLU, relulab.ReLU):
        _, report = relulab.replace_activations(model, old, "mish")
        assert [r.path for r in report.replaced] == ["0", "1"]


class RunTimeSlope(nn.Module):
    def __init__(self):
        super().__init__()
        self.slope = nn.Parameter(torch.tensor(0.1))

    def forward(self, x):
        return F.elu(F.relu(x), alpha=self.slope) + F.elu(x)


def test_calls_with_arguments_computed_at_run_time_are_reported_not_replaced():
    _, report = relulab.replace_activations(RunTimeSlope(), "elu", "gelu")
    assert [r.old for r in report.replaced] == ["elu(alpha=1.0)"]  # the constant-argument one
    assert len(report.skipped) == 1 and "computed at run time" in report.skipped[0][1]


def test_in_place_modules_are_noted_in_the_report():
    _, report = relulab.replace_activations(nn.Sequential(nn.ReLU(inplace=True)), "relu", "gelu")
    assert report.replaced[0].note == "was in place; the replacement is not"
    assert "was in place" in str(report)


def test_module_lists_and_dicts():
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.acts = nn.ModuleList([nn.ReLU(), nn.GELU()])
            self.named = nn.ModuleDict({"first": nn.ReLU()})

        def forward(self, x):
            return self.named["first"](self.acts[1](self.acts[0](x)))

    model = Holder()
    x = torch.randn(3, 4)
    new, report = relulab.replace_activations(model, "relu", "silu")
    assert sorted(r.path for r in report.replaced) == ["acts.0", "named.first"]
    torch.testing.assert_close(new(x), F.silu(F.gelu(F.silu(x))), rtol=0, atol=0)


def test_models_with_velu_copy_after_a_training_step():
    model = nn.Sequential(nn.Linear(4, 4), relulab.VeLU())
    y = model(torch.randn(8, 4))
    (y.sum() + model[1].aux_loss).backward()
    assert copy.deepcopy(model)[1].aux_loss is None
    new, report = relulab.replace_activations(model, "velu", "relu")
    assert len(report) == 1 and isinstance(new[1], relulab.ReLU)


def test_an_activation_model_replaced_whole_is_not_traced():
    new, report = relulab.replace_activations(nn.ReLU(), "relu", "gelu")
    assert isinstance(new, relulab.GELU) and report.trace_error is None


class MyCustomAct(nn.Module):
    """An activation relulab does not know (no recognised call inside either)."""

    def forward(self, x):
        return x * (x > 0)


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.acts = nn.Sequential(nn.ReLU(), nn.ReLU(), nn.ReLU())
        self.custom = MyCustomAct()

    def forward(self, x):
        return F.gelu(self.custom(self.acts(self.fc(x))))


@pytest.mark.parametrize(
    ("old", "described"),
    [(MyCustomAct, "MyCustomAct"), ("mish", "'mish'"), (["selu", "elu"], "['selu', 'elu']")],
)
def test_matching_nothing_warns_and_says_what_the_model_has(old, described):
    model = Mixed()
    x = torch.randn(3, 4)
    with pytest.warns(UserWarning) as caught:
        new, report = relulab.replace_activations(model, old, "golu")
    (warning,) = caught
    assert str(warning.message).startswith(
        f"no activation site matched {described}; the model has: relu ×3 (modules), gelu ×1 (call)"
    )
    assert warning.filename == __file__  # points at the caller, not at relulab
    assert len(report) == 0
    torch.testing.assert_close(new(x), F.gelu(F.relu(model.fc(x))), rtol=0, atol=0)


def test_an_unrecognised_class_is_named_as_such_in_the_warning():
    with pytest.warns(UserWarning, match=r"MyCustomAct is not an activation relulab recognises"):
        relulab.replace_activations(Mixed(), MyCustomAct, "golu")


def test_the_warning_says_when_calls_were_not_examined():
    with pytest.warns(UserWarning, match=r"relu ×3 \(modules\); functional calls were not"):
        relulab.replace_activations(Mixed(), "gelu", "golu", functional=False)
    with pytest.warns(UserWarning, match="functional calls were not examined: TraceError"):
        relulab.replace_activations(Branchy(), "gelu", "golu")


def test_a_model_without_activations_warns_too():
    with pytest.warns(UserWarning, match="the model has no activation site relulab recognises"):
        relulab.replace_activations(nn.Linear(2, 2), "relu", "golu")


@pytest.mark.parametrize("old", ["relu", nn.ReLU, ["relu", "mish"], "gelu"])
def test_a_matching_replacement_does_not_warn(old):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, report = relulab.replace_activations(Mixed(), old, "golu")
    assert len(report) > 0


def test_a_users_subclass_matches_its_own_instances_only():
    class MyReLU(nn.ReLU):
        pass

    model = nn.Sequential(nn.Linear(2, 2), MyReLU(), nn.Linear(2, 2), nn.ReLU())
    replaced, report = relulab.replace_activations(model, MyReLU, "gelu")
    assert [r.path for r in report.replaced] == ["1"]
    assert isinstance(replaced[1], relulab.GELU) and type(replaced[3]) is nn.ReLU
    _, by_torch_class = relulab.replace_activations(model, nn.ReLU, "gelu")
    assert sorted(r.path for r in by_torch_class.replaced) == ["1", "3"]  # all of relu
