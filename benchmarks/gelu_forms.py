"""Why the trainers keep ATen's tanh-GELU: its CPU kernel against the same function composed from
faster kernels, and against the erf GELU (another function, for scale), forward and backward.

    python benchmarks/gelu_forms.py [--rows 1536] [--width 1024] [--repeats 50] [--threads 2]

GPT-2's MLP applies gelu_tanh(x) = x/2 (1 + tanh(z)), z = sqrt(2/pi) (x + 0.044715 x^3), to a
(tokens, 4d) activation: 1536 x 1024 is a 'tiny' reward step's (8 rows of 192 tokens, d = 256).
Prints the best of `--repeats` forward and forward + backward times per form, and each composite's
largest difference from the kernel (forward and gradient, float32 rounding: about 1e-6).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

C, A = math.sqrt(2.0 / math.pi), 0.044715


class TanhChain(torch.autograd.Function):
    """gelu_tanh from in-place passes and `torch.tanh`, with its closed-form derivative
    1/2 (1 + t) + x/2 (1 - t^2) C (1 + 3 A x^2), t = tanh(z); saves x and t."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        t = x * x
        t.mul_(C * A).add_(C).mul_(x).tanh_()  # tanh(C (x + A x^3))
        ctx.save_for_backward(x, t)
        return torch.addcmul(x, x, t).mul_(0.5)  # x (1 + t) / 2

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, t = ctx.saved_tensors
        s = x * x
        s.mul_(3 * C * A).add_(C).mul_(x)  # C x (1 + 3 A x^2)
        s.mul_(torch.addcmul(torch.ones_like(t), t, t, value=-1)).add_(t).add_(1).mul_(0.5)
        return s.mul_(grad)


def sigmoid_form(x: torch.Tensor) -> torch.Tensor:
    """gelu_tanh = x sigmoid(2 z), through autograd: 1 + tanh(z) = 2 sigmoid(2 z)."""
    u = torch.addcmul(torch.tensor(2 * C), x, x, value=2 * C * A)  # 2 C (1 + A x^2)
    return x * torch.sigmoid(u * x)


FORMS = {
    "ATen gelu(approximate='tanh')": lambda x: F.gelu(x, approximate="tanh"),
    "in-place tanh chain": TanhChain.apply,
    "x * sigmoid(2z)": sigmoid_form,
    "erf GELU (other function)": F.gelu,
}


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(rows: int, width: int, repeats: int) -> dict[str, tuple[float, float, float, float]]:
    """Per form: (forward s, forward + backward s, largest forward and gradient difference from the kernel)."""
    torch.manual_seed(0)
    x0 = torch.randn(rows, width) * 2
    grad = torch.randn(rows, width)
    ref = x0.clone().requires_grad_(True)
    ref_y = FORMS["ATen gelu(approximate='tanh')"](ref)
    (ref_g,) = torch.autograd.grad(ref_y, ref, grad)
    ref_y = ref_y.detach()
    out = {}
    for name, form in FORMS.items():
        with torch.no_grad():
            forward = best(lambda: form(x0), repeats)

        def step():
            x = x0.clone().requires_grad_(True)
            form(x).backward(grad)

        both = best(step, repeats)
        x = x0.clone().requires_grad_(True)
        y = form(x)
        (g,) = torch.autograd.grad(y, x, grad)
        out[name] = (forward, both, float((y.detach() - ref_y).abs().max()), float((g - ref_g).abs().max()))
    return out


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float, float, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1536)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = measure(args.rows, args.width, args.repeats)
    print(f"({args.rows}, {args.width}) float32, {args.threads} threads, best of {args.repeats}")
    print("| form | forward ms | forward + backward ms | max forward diff | max gradient diff |")
    print("| --- | --- | --- | --- | --- |")
    for name, (fwd, both, dy, dg) in results.items():
        print(f"| {name} | {1e3 * fwd:.3f} | {1e3 * both:.3f} | {dy:.1e} | {dg:.1e} |")
    return results


if __name__ == "__main__":
    main()
