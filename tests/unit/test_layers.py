"""libs/ is what services run on and the operator's tooling: it never imports services/ (harmon runs a
service's own command as a subprocess instead, e.g. `harmon keys` → `python -m services.gateway.admin_cli`)."""

from tests.unit.test_gateway_imports import ROOT, imported_names


def test_the_scan_sees_imports():
    assert "libs.stack.supervisor" in imported_names(ROOT / "libs" / "stack" / "admin_cli.py") | {
        n.rpartition(".")[0] for n in imported_names(ROOT / "libs" / "stack" / "admin_cli.py")}


def test_no_module_under_libs_imports_services():
    offenders = sorted({f"{path.relative_to(ROOT)}: {name}"
                        for path in (ROOT / "libs").rglob("*.py") for name in imported_names(path)
                        if name == "services" or name.startswith("services.")})
    assert not offenders, "libs/ must not import services/:\n" + "\n".join(offenders)
