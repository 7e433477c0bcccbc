"""Readiness and the schema (libs/runtime/migrations.py `schema_state`): an instance is ready on its own head and on a
schema a newer version migrated (migrations only expand, so a rolling deploy migrates first), never on an older one."""

from pathlib import Path

from libs.runtime.migrations import head_revision, known_revisions, schema_state

ORDERS = Path(__file__).resolve().parents[2] / "services" / "orders" / "migrations"


def test_this_versions_head_is_current():
    head, known = head_revision(ORDERS), known_revisions(ORDERS)
    assert head in known
    assert schema_state(head, head, known) == ("current", True)


def test_a_revision_this_version_does_not_ship_is_a_newer_schema_and_ready():
    head, known = head_revision(ORDERS), known_revisions(ORDERS)
    state, ready = schema_state("9999_from_a_newer_release", head, known)
    assert ready and state.startswith("ahead: at 9999_from_a_newer_release")


def test_an_older_or_missing_schema_is_not_ready():
    head, known = head_revision(ORDERS), known_revisions(ORDERS)
    older = next(r for r in known if r != head)
    assert schema_state(older, head, known) == (f"at {older}, head is {head}", False)
    assert schema_state(None, head, known)[1] is False
    # without the list of known revisions (a caller that does not pass it), only the head is ready
    assert schema_state("9999_from_a_newer_release", head, None)[1] is False
