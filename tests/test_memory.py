import torch

from relulab.memory import saved_bytes


def test_each_saved_tensor_counts_once_by_its_own_size():
    x = torch.randn(10, 20, dtype=torch.float64, requires_grad=True)
    y = torch.randn(20, requires_grad=True)
    # mul saves both operands, each in its own dtype: 200 float64 and 20 float32
    assert saved_bytes(lambda: x * y) == 200 * 8 + 20 * 4
    # exp saves its result, mul the other (constant) operand: two tensors
    assert saved_bytes(lambda: x.exp() * x.exp().detach()) == 2 * 200 * 8
    # exp's result, saved by exp and twice by mul, is one tensor
    assert saved_bytes(lambda: (lambda e: e * e)(x.exp())) == 200 * 8


def test_resident_storages_are_not_counted():
    weight = torch.nn.Parameter(torch.randn(20, 5))
    x = torch.randn(8, 20, requires_grad=True)
    assert saved_bytes(lambda: x @ weight) == (8 * 20 + 20 * 5) * 4
    assert saved_bytes(lambda: x @ weight, resident=[weight]) == 8 * 20 * 4
    assert saved_bytes(lambda: x[2:] @ weight, resident=[weight, x]) == 0  # a view of x


def test_nothing_is_saved_without_grad():
    assert saved_bytes(lambda: torch.randn(5).exp()) == 0
