"""The customer model's rules: each broken input is refused naming the field and the rule."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from erpcloud import policy
from erpcloud.fleet import CustomerFileError, FieldError, parse_customer
from erpcloud.model import Customer, Environment, LifecycleState, SecretSource, derive_test_sizing
from erpcloud.versions import ProductVersion, check_move_in, oldest_supported

FILE = "customers/acme-retail.yaml"
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN65iAU2AbMkiUPJyb9Vrb1KKJ4cqZDx5brFa2BVJUPA t@x"
# A real 2048-bit RSA key: parseable, but below S4's 3072-bit minimum.
RSA_2048 = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC6AlhNlDZes5SwKzTTsPvLqB7nwTJIPCIMHCRZA9H/Ho7+QvZEk6uo"
    "YIlcS//JJidoZ2kj6uPQWZkXH+HWF8cDnjunTT+E7fRrhm5ZgZBBX6BKmoipvw8oIUw+opDomiKiawvA2qHjj5sFJKNh"
    "fFXdN7oUDnQqWyuRmLQovSmWojwc9zauUJ4BJlMNUZfsNJftWkOjCB6ZORrGhQCxtHH7TfuGfgQMoPM8GfdIiORb+z3h"
    "cG6nCbqvmdFTRr2hEmZDgng7oCSds1W5BiwzLnrZU3q+Ixu/YTqApQyIFKHWDUeXO12ukhwljk8xndG8BMh9vXAGJQfr"
    "KcY3nnNztjC7 test@example"
)
ECDSA = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBMnompz7QTxeeXhKuU1w"
    "NeJgEcg3bTTl/+gEJV3nRUt7MPO/lTOtc6Lo9/3PSpsGSyNOAxj9fbfJGtMztk1NP54= e"
)


def errors_of(document: dict[str, Any]) -> list[FieldError]:
    with pytest.raises(CustomerFileError) as caught:
        parse_customer(document, FILE)
    return caught.value.errors


def only_error(document: dict[str, Any]) -> FieldError:
    errors = errors_of(document)
    assert len(errors) == 1, errors
    return errors[0]


def test_samples_cover_both_default_regions_and_both_editions(sample_fleet: dict[str, Customer]):
    assert len(sample_fleet) >= 3
    assert {c.region for c in sample_fleet.values()} >= policy.DEFAULT_REGIONS
    assert {c.edition for c in sample_fleet.values()} == set(policy.Edition)


def test_valid_document_parses(acme_document: dict[str, Any]):
    customer = parse_customer(acme_document, FILE)
    assert customer.url_host == f"acme.cloud.{policy.SERVICE_DOMAIN}"
    assert customer.backup_copy_region == "eu-central-1"


# --- S3: prefix -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("prefix", "rule"),
    [
        ("Acme", "valid DNS label"),
        ("-acme", "valid DNS label"),
        ("acme-", "valid DNS label"),
        ("ac_me", "valid DNS label"),
        ("a" * 64, "valid DNS label"),
        ("", "valid DNS label"),
        ("xn--acme", "IDNA"),
        ("www", "reserved"),
        ("status", "reserved"),
    ],
)
def test_prefix_rules(acme_document: dict[str, Any], prefix: str, rule: str):
    acme_document["prefix"] = prefix
    error = only_error(acme_document)
    assert (error.file, error.field) == (FILE, "prefix")
    assert rule in error.rule
    assert "S3" in error.rule


def test_prefix_of_63_characters_is_accepted(acme_document: dict[str, Any]):
    acme_document["prefix"] = "a" * 63
    assert parse_customer(acme_document, FILE).prefix == "a" * 63


def test_domain_is_not_a_customer_field(acme_document: dict[str, Any]):
    acme_document["domain"] = "acme.example.com"
    error = only_error(acme_document)
    assert error.field == "domain" and "not a known field" in error.rule


# --- S10: regions ---------------------------------------------------------------------------
def test_non_default_region_needs_exception(acme_document: dict[str, Any]):
    acme_document["region"] = "eu-west-3"
    acme_document["copy_region"] = "eu-central-1"
    error = only_error(acme_document)
    assert error.field == "region" and "region_exception" in error.rule and "S10" in error.rule


def test_region_exception_allows_other_region(acme_document: dict[str, Any]):
    acme_document.update(
        region="eu-west-3",
        copy_region="eu-central-1",
        region_exception="Customer contract requires data residency in France",
    )
    customer = parse_customer(acme_document, FILE)
    assert (customer.region, customer.backup_copy_region) == ("eu-west-3", "eu-central-1")


def test_region_must_match_partner_zone(acme_document: dict[str, Any]):
    acme_document["region"] = "us-east-1"
    error = only_error(acme_document)
    assert error.field == "region" and "zone EU" in error.rule


def test_copy_region_is_derived_and_never_the_primary(acme_document: dict[str, Any]):
    acme_document["copy_region"] = "eu-west-1"
    error = only_error(acme_document)
    assert error.field == "copy_region" and "differ" in error.rule


def test_exception_region_without_copy_region_is_refused(acme_document: dict[str, Any]):
    acme_document.update(region="eu-west-3", region_exception="Data residency in France")
    error = only_error(acme_document)
    assert error.field == "copy_region" and "S6" in error.rule


@pytest.mark.parametrize("region", ["eu-west-1", "us-east-1"])
def test_default_regions_have_a_different_copy_region(region: str):
    assert policy.COPY_REGIONS[region] != region


def test_unknown_region_is_refused(acme_document: dict[str, Any]):
    acme_document["region"] = "mars-north-1"
    assert only_error(acme_document).field == "region"


# --- S1/S2/S9: sizing -----------------------------------------------------------------------
def test_unknown_instance_type(acme_document: dict[str, Any]):
    acme_document["production"]["instance_type"] = "x9.huge"
    error = only_error(acme_document)
    assert error.field == "production.instance_type" and "not an instance type" in error.rule


def test_production_type_must_be_production_class(acme_document: dict[str, Any]):
    acme_document["production"]["instance_type"] = "t3.large"
    assert "too small for production" in only_error(acme_document).rule


def test_max_volume_below_size_is_refused(acme_document: dict[str, Any]):
    acme_document["production"]["max_data_volume_gib"] = 100
    error = only_error(acme_document)
    assert error.field == "production.max_data_volume_gib" and "S2" in error.rule


@pytest.mark.parametrize(
    "name", sorted(n for n, t in policy.INSTANCE_TYPES.items() if t.production)
)
def test_derived_test_sizing_is_at_most_half(name: str):
    from erpcloud.model import ProductionSizing

    production = ProductionSizing(instance_type=name, data_volume_gib=333)
    derived = derive_test_sizing(production)
    assert derived.type.vcpu <= production.type.vcpu * policy.TEST_ENV_MAX_RATIO
    assert derived.type.memory_gib <= production.type.memory_gib * policy.TEST_ENV_MAX_RATIO
    assert derived.data_volume_gib <= 333 * policy.TEST_ENV_MAX_RATIO
    assert derived.type.family == production.type.family


def test_test_environment_override_only_downwards(acme_document: dict[str, Any]):
    acme_document["test_environment"] = {"instance_type": "m6i.xlarge"}
    error = only_error(acme_document)
    assert error.field == "test_environment" and "S9" in error.rule
    acme_document["test_environment"] = {"data_volume_gib": 150}
    assert "only smaller" in only_error(acme_document).rule
    acme_document["test_environment"] = {"instance_type": "t3.medium", "data_volume_gib": 40}
    sizing = parse_customer(acme_document, FILE).test_sizing
    assert (sizing.instance_type, sizing.data_volume_gib) == ("t3.medium", 40)


def test_production_volume_leaves_room_for_half(acme_document: dict[str, Any]):
    acme_document["production"]["data_volume_gib"] = 30
    acme_document["production"].pop("max_data_volume_gib")
    assert "S9" in only_error(acme_document).rule


# --- S4/S20: SSH ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["root", "postgres", "Marta", "9lives", "a" * 33, "ma rta"])
def test_ssh_user_names(acme_document: dict[str, Any], name: str):
    acme_document["ssh"]["users"][0]["name"] = name
    error = only_error(acme_document)
    assert error.field == "ssh.users[0].name" and "S4" in error.rule


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        (RSA_2048, "at least 3072"),
        (ED25519 + "\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN65iAU2AbMkiUPJyb9Vr", "U+000A"),
        ('command="/bin/sh" ' + ED25519, "options"),
        (ED25519 + " " + "c" * 101, "at most 100"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "not accepted"),
        (
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN65iAU2AbMkiUPJyb9Vrb1KKJ4cqZDx5brFa2BVJUP",
            "valid",
        ),
        ("ssh-ed25519", "not an OpenSSH public key"),
        # an RSA body under an ed25519 label: only a real parser notices
        ("ssh-ed25519 " + RSA_2048.split()[1], "valid"),
    ],
)
def test_ssh_key_rules(acme_document: dict[str, Any], key: str, rule: str):
    acme_document["ssh"]["users"][0]["keys"] = [ED25519, key]
    error = only_error(acme_document)
    assert error.field == "ssh.users[0].keys[1]"
    assert rule in error.rule


def test_any_source_needs_explicit_flag(acme_document: dict[str, Any]):
    acme_document["ssh"]["allowed_cidrs"] = ["0.0.0.0/0"]
    error = only_error(acme_document)
    assert error.field == "ssh" and "allow_any_source" in error.rule
    acme_document["ssh"]["allow_any_source"] = True
    assert parse_customer(acme_document, FILE).ssh.allow_any_source


@pytest.mark.parametrize("cidr", ["10.0.0.1/8", "not-a-net", "127.0.0.0/8", "300.1.1.1/32"])
def test_bad_cidrs(acme_document: dict[str, Any], cidr: str):
    acme_document["ssh"]["allowed_cidrs"] = [cidr]
    assert only_error(acme_document).field == "ssh.allowed_cidrs"


def test_duplicate_ssh_users(acme_document: dict[str, Any]):
    acme_document["ssh"]["users"][1]["name"] = acme_document["ssh"]["users"][0]["name"]
    assert "duplicate" in only_error(acme_document).rule


# --- S15: versions --------------------------------------------------------------------------
def test_old_version_is_refused(acme_document: dict[str, Any]):
    acme_document["product_version"] = "23Q4"
    error = only_error(acme_document)
    assert error.field == "product_version" and "S15" in error.rule
    assert str(oldest_supported()) in error.rule


def test_oldest_supported_is_fourth_latest_confirmed_stable():
    from erpcloud.versions import ReleaseStatus, releases

    stable = [r.version for r in releases() if r.status is ReleaseStatus.CONFIRMED_STABLE]
    assert oldest_supported() == stable[-4]
    assert all(r.version > oldest_supported() for r in releases()[-2:])


@pytest.mark.parametrize("text", ["25Q5", "2025Q1", "v25Q2", "RR15", "25Q2.x", "QQ15Q2"])
def test_malformed_versions(text: str):
    with pytest.raises(ValueError, match="not a product version"):
        ProductVersion.parse(text)


def test_version_ordering_ignores_legacy_prefix():
    assert ProductVersion.parse("RR15Q2") == ProductVersion.parse("PR15Q2")
    assert ProductVersion.parse("25Q2.1") > ProductVersion.parse("25Q2")
    assert ProductVersion.parse("26Q1") > ProductVersion.parse("25Q4.9")


def test_move_in_minimum_per_edition():
    with pytest.raises(ValueError, match="minimum version to move in"):
        check_move_in(ProductVersion.parse("RR15Q1"), policy.Edition.COMMERCE)
    with pytest.raises(ValueError, match="S15"):  # above S19's minimum, but unsupported
        check_move_in(ProductVersion.parse("RR16Q1"), policy.Edition.COMMERCE)
    check_move_in(ProductVersion.parse("26Q1"), policy.Edition.BUSINESS)


# --- S17: licence ---------------------------------------------------------------------------
def test_commerce_minimums(acme_document: dict[str, Any]):
    acme_document["licence"].update(concurrent_users=9, pos_terminals=19)
    error = only_error(acme_document)
    assert error.field == "licence"
    assert "10 concurrent users" in error.rule and "20 POS terminals" in error.rule


def test_business_minimum(acme_document: dict[str, Any]):
    acme_document["edition"] = "business"
    acme_document["licence"].update(concurrent_users=19, pos_terminals=0)
    assert "20 concurrent users" in only_error(acme_document).rule


def test_minimum_term(acme_document: dict[str, Any]):
    acme_document["licence"]["term_months"] = 6
    error = only_error(acme_document)
    assert error.field == "licence.term_months" and "S17" in error.rule


def test_term_starts_at_invoice_date(acme_document: dict[str, Any]):
    customer = parse_customer(acme_document, FILE)
    assert customer.licence.term_start == date(2026, 2, 1)


# --- S18: lifecycle -------------------------------------------------------------------------
def test_cancelled_needs_notice_date_and_dates_follow(acme_document: dict[str, Any]):
    acme_document["lifecycle"] = {"state": "cancelled"}
    assert "notice_date" in only_error(acme_document).rule
    acme_document["lifecycle"]["notice_date"] = "2026-11-02"
    lifecycle = parse_customer(acme_document, FILE).lifecycle
    assert lifecycle.state is LifecycleState.CANCELLED
    assert lifecycle.termination_date == date(2026, 12, 2)
    assert lifecycle.purge_allowed_from == date(2027, 1, 31)


def test_notice_date_only_when_cancelled(acme_document: dict[str, Any]):
    acme_document["lifecycle"] = {"state": "active", "notice_date": "2026-01-01"}
    assert only_error(acme_document).field == "lifecycle"


# --- S6/S7/S8: backup settings ---------------------------------------------------------------
def test_retention_below_policy(acme_document: dict[str, Any]):
    acme_document["backup"] = {"retention_days": 29}
    error = only_error(acme_document)
    assert error.field == "backup.retention_days" and "30 days" in error.rule


@pytest.mark.parametrize("seconds", [46, 61, 3601, 0])
def test_archive_timeout_above_rpo_target(acme_document: dict[str, Any], seconds: int):
    acme_document["backup"] = {"archive_timeout_seconds": seconds}
    error = only_error(acme_document)
    assert error.field == "backup.archive_timeout_seconds" and "RPO" in error.rule


# --- secrets: references only ---------------------------------------------------------------
@pytest.mark.parametrize("value", ["hunter2-literal-key", "vault:thing", "env:", "generated:x"])
def test_secret_must_be_a_reference(acme_document: dict[str, Any], value: str):
    acme_document["secrets"]["activation_key"] = value
    assert only_error(acme_document).field.startswith("secrets.activation_key")


def test_secret_references_parse(acme_document: dict[str, Any]):
    acme_document["secrets"] = {
        "activation_key": "secrets-manager:erpcloud/acme/key",
        "database_password": "env:ACME_DB_PASSWORD",
    }
    secrets = parse_customer(acme_document, FILE).secrets
    assert secrets.activation_key.source is SecretSource.SECRETS_MANAGER
    assert secrets.database_password.name == "ACME_DB_PASSWORD"


def test_secret_field_in_file_is_refused(acme_document: dict[str, Any]):
    acme_document["secrets"]["database_password_value"] = "s3cr3t"
    assert "not a known field" in only_error(acme_document).rule


# --- reporting ------------------------------------------------------------------------------
def test_all_errors_of_a_file_at_once(acme_document: dict[str, Any]):
    acme_document["prefix"] = "WWW"
    acme_document["ssh"]["users"][0]["name"] = "root"
    acme_document["licence"]["term_months"] = 3
    acme_document["contact_email"] = "not-an-email"
    acme_document["typo_field"] = 1
    fields = {e.field for e in errors_of(acme_document)}
    assert fields == {
        "prefix",
        "ssh.users[0].name",
        "licence.term_months",
        "contact_email",
        "typo_field",
    }


def test_missing_fields_are_named(acme_document: dict[str, Any]):
    del acme_document["licence"]
    del acme_document["partner"]["zone"]
    fields = {(e.field, e.rule) for e in errors_of(acme_document)}
    assert fields == {("licence", "is required"), ("partner.zone", "is required")}


def test_environments_differ_in_backups_and_monitoring():
    assert Environment.PRODUCTION.has_backups and Environment.PRODUCTION.has_monitoring
    assert not Environment.TEST.has_backups and not Environment.TEST.has_monitoring
