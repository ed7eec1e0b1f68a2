"""benchmarks/gelu_forms.py: the composed tanh-GELUs are the kernel's function (forward and gradient
to float32 rounding), the erf GELU is not, and every form is timed."""

from benchmarks import gelu_forms


def test_composites_match_the_kernel_and_erf_does_not(capsys):
    results = gelu_forms.main(["--rows", "64", "--width", "128", "--repeats", "2", "--threads", "1"])
    assert set(results) == set(gelu_forms.FORMS)
    for name, (forward, both, dy, dg) in results.items():
        assert 0 < forward and 0 < both
        if "erf" in name:
            assert dy > 1e-4  # a different function: up to about 5e-4 apart
        else:
            assert dy < 1e-5 and dg < 1e-5, name
    assert capsys.readouterr().out.count("\n| ") == 2 + len(gelu_forms.FORMS)
