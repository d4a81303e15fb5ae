"""replace_activations on a torchvision-free ResNet-style model and on models with functional
calls: outputs equal a hand-built model with the new activation; report right; input untouched."""

from __future__ import annotations

import copy
import functools
import inspect
import pickle
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
    assert {(r.old, r.new) for r in report.replaced} == {("relu", "golu")}
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
    assert isinstance(new, Functional)
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


def test_untraceable_models_get_their_modules_and_calls_replaced():
    model = Branchy()
    new, report = relulab.replace_activations(model, "relu", "mish")
    assert isinstance(new.act, relulab.Mish) and isinstance(new, Branchy)
    assert [r.kind for r in report.replaced] == ["module", "call"]
    for x in (torch.ones(3), -torch.ones(3)):  # both branches
        want = F.mish(x) if x.sum() > 0 else F.mish(-x)
        torch.testing.assert_close(new(x), want, rtol=0, atol=0)


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
    with pytest.warns(UserWarning, match=r"kept forward, test_surgery\.py:\d+: F\.elu\(F\.relu"):
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


def test_an_activation_model_replaced_whole_is_not_read():
    new, report = relulab.replace_activations(nn.ReLU(), "relu", "gelu")
    assert isinstance(new, relulab.GELU) and not report.not_examined and not report.skipped


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
    with pytest.warns(UserWarning, match=r"has: relu ×2 \(1 module, 1 call\)$"):
        relulab.replace_activations(Branchy(), "gelu", "golu")  # its calls were read


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


# --- functional calls: the user's model, its class and its source lines (issue 10, item 9) ---


def _line(function, text: str) -> int:
    """The file's line number of the one line of ``function``'s source containing ``text``."""
    lines, first = inspect.getsourcelines(function)
    (index,) = [i for i, line in enumerate(lines) if text in line]
    return first + index


class Body(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return F.relu(self.fc(x))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.Tanh()))
        self.block = Body()
        self.scale = 3.0

    def custom(self):
        return 2 * self.scale

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = self.block(h).relu()
        return F.leaky_relu(h, 0.2)


def test_replaced_calls_keep_the_users_class_methods_and_submodule_types():
    model = Net().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    new, report = relulab.replace_activations(model, "relu", "golu")
    assert isinstance(new, Net) and type(new).__name__ == "Net" and repr(new).startswith("Net(")
    assert new.custom() == 6.0 and new.scale == 3.0
    assert type(new.stem) is nn.Sequential and type(new.stem[1]) is nn.Sequential
    assert isinstance(new.block, Body) and type(new.stem[1][1]) is nn.Tanh
    golu = relulab.GoLU()
    want = F.leaky_relu(golu(golu(model.block.fc(golu(model.stem(x))))), 0.2)
    torch.testing.assert_close(new(x), want, rtol=0, atol=0)
    assert [r.kind for r in report.replaced] == ["call"] * 3


def test_each_call_is_reported_by_module_path_method_and_source_line():
    _, report = relulab.replace_activations(Net(), "*", "gelu")
    forward, body, here = Net.forward, Body.forward, "test_surgery.py"
    assert [str(r) for r in report.replaced] == [
        "stem.1.1 (module): tanh -> gelu",
        f"forward, {here}:{_line(forward, 'torch.relu(')}: torch.relu(self.stem(x)) -> gelu",
        f"forward, {here}:{_line(forward, '.relu()')}: self.block(h).relu() -> gelu",
        f"forward, {here}:{_line(forward, 'F.leaky_relu(')}: F.leaky_relu(h, 0.2) -> gelu",
        f"block.forward, {here}:{_line(body, 'F.relu(')}: F.relu(self.fc(x)) -> gelu",
    ]
    assert report.replaced[4].location.filename == __file__
    assert report.replaced[3].old == "leaky_relu(negative_slope=0.2)"


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        for _ in range(1 + int(x.abs().sum() > 10)):  # a loop count that depends on the data
            x = F.relu(self.fc(x))
        if x.mean() > 0.3:  # so does the branch
            return torch.relu(x - 0.3) * 2
        return F.leaky_relu(-x, negative_slope=0.1)


def test_calls_in_models_fx_cannot_trace_are_replaced():
    model = Untraceable().double()
    with pytest.raises(Exception):  # noqa: B017 (fx raises TypeError or TraceError)
        torch.fx.symbolic_trace(model)
    new, report = relulab.replace_activations(model, ["relu", "leaky_relu"], "silu")
    assert len(report) == 3 and isinstance(new, Untraceable)
    silu = relulab.SiLU()

    def by_hand(x):
        for _ in range(1 + int(x.abs().sum() > 10)):
            x = silu(model.fc(x))
        return silu(x - 0.3) * 2 if x.mean() > 0.3 else silu(-x)

    torch.manual_seed(0)
    branches = set()
    for scale in (0.1, 1.0, 10.0, 100.0):
        x = scale * torch.randn(3, 4, dtype=torch.float64)
        torch.testing.assert_close(new(x), by_hand(x), rtol=0, atol=0)
        h = x
        for _ in range(1 + int(x.abs().sum() > 10)):
            h = silu(model.fc(h))
        branches.add((x.abs().sum().item() > 10, h.mean().item() > 0.3))
    assert len(branches) >= 3  # both loop counts and both branches were taken


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.block, self.other = Body(), Body()
        self.layers = nn.ModuleList([self.block, self.other, self.block])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def test_shared_custom_modules_get_one_replacement_each_and_stay_shared():
    model = Shared().double()
    x = torch.randn(3, 4, dtype=torch.float64)
    new, report = relulab.replace_activations(model, "relu", "prelu")
    assert new.layers[0] is new.layers[2] is new.block and new.layers[1] is new.other
    assert [r.path for r in report.replaced] == ["block", "other"]
    act = relulab.PReLU(init=0.25)  # 0.25: exact in the new modules' float32 weight
    want = act(model.block.fc(act(model.other.fc(act(model.block.fc(x))))))
    torch.testing.assert_close(new(x), want, rtol=0, atol=0)
    key = f"forward_line{_line(Body.forward, 'F.relu(')}"
    # state_dict lists a shared module under each of its paths, as it lists its fc
    paths = ["block", "other", "layers.0", "layers.1", "layers.2"]
    added = {f"{p}.relulab_sites.{key}.weight" for p in paths}
    assert set(new.state_dict()) - set(model.state_dict()) == added
    assert len({id(p) for p in new.parameters()}) == len(list(model.parameters())) + 2
    assert new.block.relulab_sites[key] is not new.other.relulab_sites[key]


def test_a_parameter_free_replacement_adds_nothing_to_the_state_dict():
    model = Net()
    new, _ = relulab.replace_activations(model, "*", "golu")
    assert list(new.state_dict()) == list(model.state_dict())
    new.load_state_dict(model.state_dict())  # the user's checkpoints still load


class Base(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return F.relu(self.fc(x))


class Child(Base):
    def forward(self, x):
        return torch.relu(super().forward(x) - 0.5)


class Grandchild(Child):
    pass


@pytest.mark.parametrize("cls", [Child, Grandchild])
def test_super_forward_and_inherited_methods_are_rewritten_where_they_are(cls):
    model = cls().double()
    x = torch.randn(3, 4, dtype=torch.float64)
    new, report = relulab.replace_activations(model, "relu", "silu")
    assert isinstance(new, cls) and isinstance(new, Base)
    silu = relulab.SiLU()
    torch.testing.assert_close(new(x), silu(silu(model.fc(x)) - 0.5), rtol=0, atol=0)
    lines = [(r.location.cls, r.location.lineno) for r in report.replaced]
    assert lines == [  # in the order forward reaches them
        (Child, _line(Child.forward, "torch.relu(")),
        (Base, _line(Base.forward, "F.relu(")),
    ]


class InPlaceForms(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x)
        h.relu_()  # the result is discarded: h itself changes
        g = h * 1 - 0.3
        F.relu(g, inplace=True)
        torch.relu_(g[:, :2])  # a view: g's first two columns change
        return h + g


def test_in_place_calls_change_what_later_code_sees_and_backward_runs():
    model = InPlaceForms().double()
    x = torch.randn(6, 4, dtype=torch.float64)
    new, report = relulab.replace_activations(model, "relu", "golu")
    assert [r.location.code for r in report.replaced] == [
        "h.relu_()",
        "F.relu(g, inplace=True)",
        "torch.relu_(g[:, :2])",
    ]
    golu = relulab.functional.golu

    def by_hand(x):
        h = golu(model.fc(x))
        g = golu(h - 0.3)
        g = torch.cat([golu(g[:, :2]), g[:, 2:]], dim=1)
        return h + g

    got, want = new(x), by_hand(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # GoLU keeps its input for backward: overwriting that input in place must not break it.
    got.square().sum().backward()
    weight = model.fc.weight
    (expected,) = torch.autograd.grad(want.square().sum(), weight)
    torch.testing.assert_close(new.fc.weight.grad, expected, rtol=1e-12, atol=1e-12)


class Helpers(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = F.relu  # a function held by the instance
        self.__gain = 2.0  # a private name, mangled to _Helpers__gain

    def _activate(self, x):
        return torch.relu(x) * self.__gain

    def forward(self, x):
        return self._activate(self.act(self.fc(x)))


def test_helper_methods_instance_functions_and_private_names():
    model = Helpers().double()
    x = torch.randn(3, 4, dtype=torch.float64)
    new, report = relulab.replace_activations(model, "relu", "mish")
    assert sorted((r.location.method, r.location.code) for r in report.replaced) == [
        ("_activate", "torch.relu(x)"),
        ("forward", "self.act(self.fc(x))"),
    ]
    mish = relulab.Mish()
    torch.testing.assert_close(new(x), mish(mish(model.fc(x))) * 2, rtol=0, atol=0)


class Slopes(nn.Module):
    def __init__(self):
        super().__init__()
        self.slope = 0.3

    def forward(self, x):
        return F.leaky_relu(x, self.slope) + F.leaky_relu(x, 0.1)


def test_a_call_with_a_computed_argument_is_kept_with_a_warning_naming_it():
    model = Slopes().double()
    x = torch.randn(8, dtype=torch.float64)
    with pytest.warns(UserWarning) as caught:
        new, report = relulab.replace_activations(model, "leaky_relu", "gelu")
    line = _line(Slopes.forward, "self.slope")
    (warning,) = caught
    assert str(warning.message) == (
        f"kept forward, test_surgery.py:{line}: F.leaky_relu(x, self.slope): "
        "its negative_slope (self.slope) is computed at run time"
    )
    assert warning.filename == __file__
    assert str(report).splitlines()[0] == "1 activation site(s) replaced, 1 matching call(s) kept"
    assert [r.location.code for r in report.replaced] == ["F.leaky_relu(x, 0.1)"]
    want = F.leaky_relu(x, 0.3) + relulab.GELU()(x)
    torch.testing.assert_close(new(x), want, rtol=0, atol=0)


def _logged(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        return function(*args, **kwargs)

    return wrapper


class Decorated(nn.Module):
    @_logged
    def forward(self, x):
        return F.relu(x)


class ReluChain(nn.Sequential):
    def forward(self, x):
        for layer in self:
            x = F.relu(layer(x))
        return x


@pytest.mark.parametrize(
    ("model", "reason"),
    [(Decorated(), "Decorated.forward is decorated"), (ReluChain(nn.Linear(2, 2)), "container")],
)
def test_calls_that_cannot_be_rewritten_are_kept_with_a_warning(model, reason):
    forward = inspect.unwrap(type(model).forward)
    line = _line(forward, "F.relu(")
    with pytest.warns(UserWarning, match=rf"kept forward, test_surgery\.py:{line}: .*{reason}"):
        new, report = relulab.replace_activations(model, "relu", "gelu")
    assert len(report) == 0 and len(report.skipped) == 1
    x = torch.randn(3, 2)
    torch.testing.assert_close(new(x), model(x), rtol=0, atol=0)


def test_a_class_whose_source_cannot_be_read_is_named_in_a_warning():
    namespace = {"nn": nn, "F": F}
    exec(
        "class Hidden(nn.Module):\n    def forward(self, x):\n        return F.relu(x)\n", namespace
    )
    model = nn.Sequential(nn.Linear(2, 2), namespace["Hidden"]())
    with pytest.warns(UserWarning) as caught:
        _, report = relulab.replace_activations(model, "relu", "gelu")
    messages = [str(w.message) for w in caught]
    assert any("1.forward" in m and "Hidden.forward cannot be read" in m for m in messages)
    assert report.not_examined and report.not_examined[0][0] == "1.forward"
    with warnings.catch_warnings():  # tanh is no name Hidden's code uses: nothing to say
        warnings.simplefilter("error")
        relulab.replace_activations(nn.Sequential(namespace["Hidden"](), nn.Tanh()), "tanh", "gelu")


def test_a_replaced_model_can_be_replaced_again():
    model = Functional().double()
    x = torch.randn(5, 6, dtype=torch.float64)
    first, _ = relulab.replace_activations(model, "relu", "silu")
    second, report = relulab.replace_activations(first, ["tanh", "silu"], "mish")
    assert isinstance(second, Functional)
    assert sorted(r.kind for r in report.replaced) == ["call"] + ["module"] * 3
    mish = relulab.Mish()
    twice = _by_hand(model, relu=mish, tanh=mish).double()
    torch.testing.assert_close(second(x), twice(x), rtol=0, atol=0)
    once = _by_hand(model, relu=relulab.SiLU()).double()
    torch.testing.assert_close(first(x), once(x), rtol=0, atol=0)


def test_in_place_surgery_rewrites_the_given_model():
    model = Net()
    x = torch.randn(2, 4)
    gelu = relulab.GELU()
    want = F.leaky_relu(gelu(gelu(model.block.fc(gelu(model.stem(x))))), 0.2)
    new, _ = relulab.replace_activations(model, "relu", "gelu", inplace=True)
    assert new is model and isinstance(model, Net)
    torch.testing.assert_close(model(x), want, rtol=0, atol=0)


def test_a_rewritten_model_deep_copies_and_pickles():
    model = Net().double()
    x = torch.randn(3, 4, dtype=torch.float64)
    new, _ = relulab.replace_activations(model, "relu", "prelu")
    for twin in (copy.deepcopy(new), pickle.loads(pickle.dumps(new))):
        assert type(twin) is type(new) and isinstance(twin, Net)
        torch.testing.assert_close(twin(x), new(x), rtol=0, atol=0)
        assert twin.block.relulab_sites is not new.block.relulab_sites


@pytest.mark.slow
def test_a_rewritten_model_runs_under_torch_compile():
    model = InPlaceForms().double()
    x = torch.randn(6, 4, dtype=torch.float64)
    new, _ = relulab.replace_activations(model, "relu", "silu")
    compiled = torch.compile(new, fullgraph=True)
    silu = relulab.functional.silu
    h = silu(model.fc(x))
    g = silu(h - 0.3)
    want = h + torch.cat([silu(g[:, :2]), g[:, 2:]], dim=1)
    torch.testing.assert_close(compiled(x), want, rtol=1e-12, atol=1e-12)


class InlineModules(nn.Module):
    def forward(self, x):
        return nn.ReLU()(x) - nn.ReLU(inplace=True)(x * 1)


def test_activation_modules_made_in_forward_are_replaced():
    x = torch.randn(7, dtype=torch.float64)
    new, report = relulab.replace_activations(InlineModules(), "relu", "elu")
    assert [r.location.code for r in report.replaced] == [
        "nn.ReLU()(x)",
        "nn.ReLU(inplace=True)(x * 1)",
    ]
    elu = relulab.ELU()
    torch.testing.assert_close(new(x), elu(x) - elu(x * 1), rtol=0, atol=0)


def test_a_transformer_layers_fast_path_uses_the_new_activation():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        8, 2, 16, dropout=0.0, activation=nn.ReLU(), batch_first=True
    )
    new, _ = relulab.replace_activations(layer.eval(), "relu", "tanh")
    twin = nn.TransformerEncoderLayer(8, 2, 16, 0.0, relulab.Tanh(), batch_first=True)
    twin.load_state_dict(layer.state_dict())
    x = torch.randn(2, 5, 8)
    with torch.no_grad():  # in eval mode without grad, torch takes its fused fast path
        torch.testing.assert_close(new(x), twin.eval()(x))


def test_an_activation_function_held_by_a_torch_module_is_named_in_a_warning():
    model = nn.Sequential(nn.Linear(8, 8), nn.TransformerEncoderLayer(8, 2, 16))  # F.relu
    with pytest.warns(UserWarning) as caught:
        _, report = relulab.replace_activations(model, "relu", "gelu")
    no_match, kept = (str(w.message) for w in caught)
    assert no_match.endswith("functional calls were not examined in 1.forward")
    assert kept.startswith("functional calls not examined in 1.forward: torch's Transformer")
    assert ".activation in its own code, so its calls of relu were kept" in kept
    assert report.not_examined[0][0] == "1.forward"


class Aliased(nn.Module):
    def _forward(self, x):
        return F.relu(x) * 3

    forward = _forward  # the method the model runs is the same function under another name


def test_a_method_assigned_under_another_name_is_rewritten_as_that_name():
    x = torch.randn(5, dtype=torch.float64)
    new, report = relulab.replace_activations(Aliased(), "relu", "softplus")
    assert [r.where for r in report.replaced] == [
        f"forward, test_surgery.py:{_line(Aliased._forward, 'F.relu(')}"
    ]
    torch.testing.assert_close(new(x), relulab.Softplus()(x) * 3, rtol=0, atol=0)


def test_new_modules_take_the_dtype_of_the_modules_they_join():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), Body()).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    new, report = relulab.replace_activations(model, "relu", "prelu(init=0.1)")
    assert [r.kind for r in report.replaced] == ["module", "call"]
    weights = [m.weight for m in new.modules() if isinstance(m, relulab.PReLU)]
    assert [w.dtype for w in weights] == [torch.float64] * 2
    prelu = relulab.PReLU(init=0.1).double()  # as a user adds one by hand to a float64 model
    want = prelu(model[2].fc(prelu(model[0](x))))
    torch.testing.assert_close(new(x), want, rtol=0, atol=0)


# --- calls in the user's own functions ------------------------------------------------------


def _mlp_act(x):
    return F.relu(x)


def _scaled(x, gain=2.0):
    return _mlp_act(x) * gain + torch.relu(-x)


class WithFunctions(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = lambda t: F.relu(t) * 3
        self.leaky = functools.partial(F.leaky_relu, negative_slope=0.2)

    def _pre(self, x):
        return _scaled(x)

    def forward(self, x):
        h = _mlp_act(self.fc(x)) + _mlp_act(x)
        return self.leaky(self.act(self._pre(h)))


def test_calls_in_the_users_functions_lambdas_and_partials_are_replaced():
    model = WithFunctions().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    new, report = relulab.replace_activations(model, ["relu", "leaky_relu"], "gelu")
    gelu = relulab.functional.gelu  # the model written by hand with the new activation
    h = gelu(model.fc(x)) + gelu(x)
    pre = gelu(h) * 2.0 + gelu(-h)
    torch.testing.assert_close(new(x), gelu(gelu(pre) * 3), rtol=0, atol=0)
    assert isinstance(new, WithFunctions)
    here = "test_surgery.py"
    forward_h = _line(WithFunctions.forward, "h = _mlp_act(")
    forward_out = _line(WithFunctions.forward, "return self.leaky(")
    lambda_line = _line(WithFunctions.__init__, "lambda t:")
    assert sorted(str(r) for r in report.replaced) == sorted(
        [
            f"forward, {here}:{forward_h} → _mlp_act, {here}:{_line(_mlp_act, 'F.relu')}: "
            "F.relu(x) -> gelu",
            f"_pre, {here}:{_line(WithFunctions._pre, '_scaled(')} → _scaled, "
            f"{here}:{_line(_scaled, 'torch.relu')}: torch.relu(-x) -> gelu",
            f"forward, {here}:{forward_out} → <lambda>, {here}:{lambda_line}: F.relu(t) -> gelu",
            f"forward, {here}:{forward_out}: self.leaky(self.act(self._pre(h))) -> gelu",
        ]
    )
    # The functions themselves, used by other code, and the user's model are untouched.
    t = torch.tensor([-1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(_mlp_act(t), torch.tensor([0.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(_scaled(t), torch.tensor([1.0, 4.0], dtype=torch.float64))
    want = F.leaky_relu(F.relu(_scaled(F.relu(model.fc(x)) + F.relu(x))) * 3, 0.2)
    torch.testing.assert_close(model(x), want, rtol=0, atol=0)


class CallsAFunction(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return _mlp_act(self.fc(x))


def test_a_function_copy_holds_trainable_sites_and_survives_pickling():
    model = CallsAFunction().double()
    x = torch.randn(4, 3, dtype=torch.float64)
    new, _ = relulab.replace_activations(model, "relu", "prelu(init=0.1)")
    key = f"relulab_sites._mlp_act_line{_line(_mlp_act, 'F.relu')}.weight"
    assert key in new.state_dict()
    want = relulab.PReLU(init=0.1).double()(model.fc(x))  # as a user adds one by hand
    for twin in (new, copy.deepcopy(new), pickle.loads(pickle.dumps(new))):
        torch.testing.assert_close(twin(x), want, rtol=0, atol=0)


def _d4(x):
    return F.relu(x)


def _d3(x):
    return _d4(x) + F.relu(-x)


def _d2(x):
    return _d3(x)


def _d1(x):
    return _d2(x)


class Deep(nn.Module):
    def forward(self, x):
        return _d1(x)


def test_a_call_deeper_than_surgery_follows_is_kept_with_a_warning_naming_each_call():
    x = torch.randn(6, dtype=torch.float64)
    with pytest.warns(UserWarning) as caught:
        new, report = relulab.replace_activations(Deep(), "relu", "tanh")
    here = "test_surgery.py"
    chain = (
        f"forward, {here}:{_line(Deep.forward, '_d1(')} → _d1, {here}:{_line(_d1, '_d2(')} "
        f"→ _d2, {here}:{_line(_d2, '_d3(')} → _d3, {here}:{_line(_d3, '_d4(')} → _d4, "
        f"{here}:{_line(_d4, 'F.relu')}"
    )
    (warning,) = caught
    assert str(warning.message) == (
        f"kept {chain}: F.relu(x): _d4 is 4 nested calls from the method; "
        "surgery rewrites functions up to 3 deep"
    )
    assert warning.filename == __file__
    assert [r.location.code for r in report.replaced] == ["F.relu(-x)"]  # in _d3: 3 deep
    torch.testing.assert_close(new(x), F.relu(x) + torch.tanh(-x), rtol=0, atol=0)


_hidden_namespace = {"F": F}
exec("def _hidden(x):\n    return F.relu(x)\n", _hidden_namespace)
_hidden = _hidden_namespace["_hidden"]


@_logged
def _decorated_act(x):
    return F.relu(x)


class Unfollowable(nn.Module):
    def forward(self, x):
        a = _hidden(x)
        b = _decorated_act(x)
        return a + b + torch.tanh(x)


class DecoratedCaller(nn.Module):
    @_logged
    def forward(self, x):
        return _mlp_act(x)


def test_functions_that_cannot_be_followed_are_named_with_the_line_that_calls_them():
    x = torch.randn(6, dtype=torch.float64)
    with pytest.warns(UserWarning) as caught:
        new, _ = relulab.replace_activations(Unfollowable(), "relu", "gelu")
    here, forward = "test_surgery.py", Unfollowable.forward
    decorated_at = inspect.getsourcelines(inspect.unwrap(_decorated_act))[1]
    assert [str(w.message) for w in caught] == [
        "no activation site matched 'relu'; the model has: tanh ×1 (call); "
        "functional calls were not examined in "
        f"forward, {here}:{_line(forward, '_hidden(')} → _hidden, <string>:1, "
        f"forward, {here}:{_line(forward, '_decorated_act(')} → _decorated_act, "
        f"{here}:{decorated_at}",
        "functional calls not examined in "
        f"forward, {here}:{_line(forward, '_hidden(')} → _hidden, <string>:1: "
        "the source of _hidden cannot be read, so its calls of relu were kept",
        "functional calls not examined in "
        f"forward, {here}:{_line(forward, '_decorated_act(')} → _decorated_act, "
        f"{here}:{decorated_at}: _decorated_act is decorated, so its calls of relu were kept",
    ]
    torch.testing.assert_close(new(x), 2 * F.relu(x) + torch.tanh(x), rtol=0, atol=0)
    with pytest.warns(UserWarning) as caught:
        new, _ = relulab.replace_activations(DecoratedCaller(), "relu", "gelu")
    forward = inspect.unwrap(DecoratedCaller.forward)
    assert [str(w.message) for w in caught] == [
        f"kept forward, {here}:{_line(forward, '_mlp_act(')} → _mlp_act, "
        f"{here}:{_line(_mlp_act, 'F.relu')}: F.relu(x): DecoratedCaller.forward is decorated"
    ]
    torch.testing.assert_close(new(x), F.relu(x), rtol=0, atol=0)


def test_the_no_match_warning_counts_the_calls_in_functions():
    with pytest.warns(UserWarning, match="no activation site matched") as caught:
        relulab.replace_activations(WithFunctions(), "tanh", "gelu")
    (warning,) = caught
    assert str(warning.message) == (
        "no activation site matched 'tanh'; the model has: leaky_relu ×1 (call), relu ×3 (calls)"
    )


@pytest.mark.parametrize(
    ("new", "shown"),
    [
        ("golu", "golu"),
        ("leaky_relu(0.2)", "leaky_relu(negative_slope=0.2)"),
        ("golu(scale=1.0)", "golu"),
        (relulab.GoLU(scale=2.0), "golu(scale=2.0)"),
        (nn.GELU(), "gelu"),
        (nn.LeakyReLU(0.3), "leaky_relu(negative_slope=0.3)"),
    ],
)
def test_the_report_names_the_new_activation_by_its_spec_without_defaults(new, shown):
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    _, report = relulab.replace_activations(model, "relu", new)
    assert str(report).splitlines()[1] == f"  1 (module): relu -> {shown}"
