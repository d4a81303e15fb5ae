"""ReLU budgets for private inference: count the ReLUs, reduce them, fold what became linear.

In private (encrypted, MPC) inference a ReLU costs orders of magnitude more than a multiply,
so the number of ReLU evaluations per input is the budget.
"""

from relulab.budget.count import LayerCount, ReLUCount, check_budget, count_relus
from relulab.budget.deepreduce import Stage, linearized, plan, relu_stages
from relulab.budget.fold import fold, fold_speed
from relulab.budget.mask_training import BudgetOutcome, train_to_budget
from relulab.budget.masks import HysteresisGate, LinearizationMask, insert_masks
from relulab.budget.repvgg import RepVGGBlock, reparameterize
from relulab.budget.resnet import BasicBlock, ResNet, resnet18

__all__ = [
    "BasicBlock",
    "BudgetOutcome",
    "HysteresisGate",
    "LayerCount",
    "LinearizationMask",
    "ReLUCount",
    "RepVGGBlock",
    "ResNet",
    "Stage",
    "check_budget",
    "count_relus",
    "fold",
    "fold_speed",
    "insert_masks",
    "linearized",
    "plan",
    "relu_stages",
    "reparameterize",
    "resnet18",
    "train_to_budget",
]
