"""benchmarks/compare.py's pure parts: the run order, medians, ratios and the targets' verdicts (no stack)."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "compare.py"
spec = importlib.util.spec_from_file_location("benchmarks_compare", PATH)
compare = importlib.util.module_from_spec(spec)
sys.modules["benchmarks_compare"] = compare  # dataclasses look their module up there
spec.loader.exec_module(compare)

Target = compare.Target


def test_rounds_interleave_base_and_head():
    assert compare.schedule(3) == [(1, "BASE"), (1, "HEAD"), (2, "BASE"), (2, "HEAD"), (3, "BASE"), (3, "HEAD")]
    assert compare.schedule(1) == [(1, "BASE"), (1, "HEAD")]


def test_median_of_the_figures_there_are():
    assert compare.median([3.0, 1.0, 2.0]) == 2.0
    assert compare.median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert compare.median([None, 5.0, 1.0]) == 3.0  # a failed run has no figure
    assert compare.median([]) is None and compare.median([None, None]) is None


def test_ratio_is_head_over_base():
    assert compare.ratio(25.0, 10.0) == 2.5
    assert compare.ratio(1.0, 0) is None  # no ratio to judge
    assert compare.ratio(None, 1.0) is None and compare.ratio(1.0, None) is None


def runs(*values):
    return [{"m": v} for v in values]


def test_an_at_least_ratio_holds_at_the_bound_and_fails_below():
    t = Target("m", "ratio>=", 2.5, "orders/s")
    assert compare.verdict(t, runs(10, 9, 11), runs(25, 30, 20))["passed"]  # 25 / 10 = 2.5
    v = compare.verdict(t, runs(10, 9, 11), runs(24, 30, 20))
    assert not v["passed"] and math.isclose(v["value"], 2.4) and (v["base"], v["head"]) == (10, 24)


def test_an_at_most_ratio_compares_medians():
    t = Target("m", "ratio<=", 0.5, "p50")
    assert compare.verdict(t, runs(100, 120, 110), runs(55, 40, 1000))["passed"]  # 55 / 110: one bad run is not the median
    assert not compare.verdict(t, runs(100), runs(51))["passed"]


def test_an_absolute_bound_on_heads_median():
    t = Target("m", "head<=", 15.0, "idle")
    assert compare.verdict(t, runs(50), runs(14.0, 15.0, 40.0))["passed"]
    assert not compare.verdict(t, runs(50), runs(15.1, 15.2, 1.0))["passed"]


def test_a_bound_on_every_head_run_fails_on_one_bad_run():
    t = Target("m", "every head<=", 0, "errors")
    assert compare.verdict(t, runs(7), runs(0, 0, 0))["passed"]
    v = compare.verdict(t, runs(0), runs(0, 1, 0))
    assert not v["passed"] and v["value"] == 1


@pytest.mark.parametrize("kind", ["ratio>=", "ratio<=", "head<=", "every head<="])
def test_a_missing_figure_fails_the_target(kind):
    t = Target("m", kind, 1.0, "x")
    assert not compare.verdict(t, runs(1.0), [])["passed"]  # no HEAD run at all
    assert not compare.verdict(t, runs(1.0), [{}])["passed"]  # a HEAD run that failed
    if kind.startswith("ratio"):
        assert not compare.verdict(t, [{}], runs(1.0))["passed"]  # nothing to compare with
    if kind == "every head<=":
        assert not compare.verdict(t, runs(1.0), runs(0.0, None))["passed"]  # every run means every run


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        compare.verdict(Target("m", "about", 1.0, "x"), runs(1), runs(1))


def test_the_issues_targets():
    got = {(t.metric, t.kind): t.bound for t in compare.TARGETS}
    assert got == {
        ("orders_per_s_32", "ratio>="): 2.5, ("errors_32", "every head<="): 0, ("cpu_ms_per_order_32", "ratio<="): 0.4,
        ("checkout_p50_1", "ratio<="): 0.5, ("checkout_p99_1", "ratio<="): 0.5, ("cart_p50_1", "ratio<="): 0.6,
        ("line_1_p50_1", "ratio<="): 0.6, ("line_2_p50_1", "ratio<="): 0.6, ("price_p50_1", "ratio<="): 0.6,
        ("idle_pct", "head<="): 15.0, ("idle_pct", "ratio<="): 0.35, ("max_rss_mib", "every head<="): 120.0,
    }
    assert all(t.metric in compare.METRICS for t in compare.TARGETS)


def level(p50=100.0, p99=200.0, orders_per_s=10.0, errors=None, cpu=None):
    ms = {s: {"p50": p50, "p90": p99, "p99": p99, "n": 500} for s in ("cart", "line_1", "line_2", "price", "checkout")}
    return {"ms": ms, "errors": errors or {}, "orders_per_s": orders_per_s,
            "cpu_ms_per_order": {"gateway": 20.0, "broker": 15.5, "bench": 1.0} if cpu is None else cpu}


def test_a_runs_figures_come_from_the_bench_json():
    f = compare.figures_of({"pct": 12.5}, level(p50=30.0, p99=90.0), level(orders_per_s=40.0, errors={"x": 2, "y": 1}),
                           {"max_mib": 101.5, "max_service": "gateway"})
    assert f["idle_pct"] == 12.5 and f["checkout_p50_1"] == 30.0 and f["checkout_p99_1"] == 90.0
    assert f["line_1_p50_1"] == f["line_2_p50_1"] == f["cart_p50_1"] == f["price_p50_1"] == 30.0
    assert f["checkouts_1"] == 500 and f["errors_1"] == 0
    assert f["orders_per_s_32"] == 40.0 and f["errors_32"] == 3
    assert f["cpu_ms_per_order_32"] == 36.5  # the sum of every part, the bench's own included
    assert f["max_rss_mib"] == 101.5
    assert compare.figures_of({"pct": 1}, level(), level(cpu={}), {"max_mib": 1})["cpu_ms_per_order_32"] is None


def test_verdicts_judge_head_against_base_and_a_failed_run_fails_them():
    good = {"idle_pct": 10.0, "orders_per_s_32": 30.0, "errors_32": 0, "cpu_ms_per_order_32": 50.0,
            "checkout_p50_1": 40.0, "checkout_p99_1": 60.0, "cart_p50_1": 10.0, "line_1_p50_1": 10.0,
            "line_2_p50_1": 10.0, "price_p50_1": 10.0, "max_rss_mib": 100.0}
    old = {"idle_pct": 40.0, "orders_per_s_32": 10.0, "errors_32": 5, "cpu_ms_per_order_32": 150.0,
           "checkout_p50_1": 120.0, "checkout_p99_1": 160.0, "cart_p50_1": 30.0, "line_1_p50_1": 25.0,
           "line_2_p50_1": 25.0, "price_p50_1": 40.0, "max_rss_mib": 110.0}
    all_runs = [{"side": side, "figures": figures} for _ in range(3) for side, figures in (("BASE", old), ("HEAD", good))]
    assert all(v["passed"] for v in compare.verdicts(all_runs))
    all_runs[-1] = {"side": "HEAD", "figures": {}, "error": "harmon dev exited"}
    failed = {v["metric"] for v in compare.verdicts(all_runs) if not v["passed"]}
    assert failed == {"errors_32", "max_rss_mib"}  # the every-run targets; the medians still stand on two runs


def test_fewer_than_three_rounds_only_with_quick():
    with pytest.raises(SystemExit):
        compare.parse_args(["458d5f7", "HEAD", "--rounds", "1"])
    args = compare.parse_args(["458d5f7", "HEAD", "--quick", "--rounds", "1", "--checkouts", "20"])
    assert (args.rounds, args.checkouts, args.seconds, args.idle_s) == (1, 20, 20.0, 60.0)
    assert compare.parse_args(["a", "b"]).rounds == 3
