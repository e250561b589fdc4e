"""QAT recovering accuracy that int8 PTQ loses: the case tests/optimize/test_qat.py
asserts on, with its figures printed.

    python benchmarks/qat_recovery.py [--seed 0]

A 64-32-10 MLP trained on scikit-learn's digits, one hidden unit made a x100 outlier by a
function-preserving rescale (see ``outlier_digits_case`` in the test); ONNX Runtime's static
QDQ with per-channel (rtinfer's default) or per-tensor int8 weights, MinMax calibration on the
training inputs; accuracy on the validation split (which the budget loop uses) and the test
split (held out from everything). Float training and QAT run on one torch thread.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

from rtinfer.optimize import quantize
from rtinfer.optimize.passes.qat import finetune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = Path(__file__).resolve().parents[1] / "tests" / "optimize" / "test_qat.py"
    spec = importlib.util.spec_from_file_location("test_qat", path)
    assert spec is not None and spec.loader is not None
    case_module = sys.modules["test_qat"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(case_module)
    qat = case_module.RECOVERY_QAT
    start = time.perf_counter()
    case = case_module.outlier_digits_case(args.seed)
    trained = time.perf_counter() - start
    print(f"budget: {case_module.RECOVERY_BUDGET.describe()}")
    print(f"float training {trained:.1f} s (export included)")
    print(f"{'held-out accuracy':<28} {'validation':>10} {'test':>8}")
    val, test = case_module.held_out_accuracy(case.model, case)
    print(f"{'float':<28} {val:>10.4f} {test:>8.4f}")
    for name, config in case_module.RECOVERY_CONFIGS.items():
        start = time.perf_counter()
        tuned = finetune(case.model, config, qat, case.train, case.train, threads=1)
        tuned_s = time.perf_counter() - start
        for what, model in (("PTQ", case.model), ("after QAT", tuned)):
            val, test = case_module.held_out_accuracy(quantize(model, config, case.train), case)
            print(f"{f'int8 {name}, {what}':<28} {val:>10.4f} {test:>8.4f}")
        print(f"  ({config.describe()}; {qat.describe()}: {tuned_s:.1f} s, export included)")


if __name__ == "__main__":
    main()
