"""An installation of the app, as the emulated Wix remembers it.

``_Installation`` holds what Get App Instance answers, field for field as Wix documents
the answer (App Management > App Instance > Get App Instance, and ``GetAppInstance
Response`` in ``@wix/auto_sdk_app-management_app-instances``), plus the IDs Token Info
and the signed ``instance`` parameter carry (site owner, account).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from . import checks

# Wix's example answer lists WIX_DEVELOPERS.* permissions; this one is what Get App
# Instance itself needs (documented: "Manage Your App").
DEFAULT_PERMISSIONS: Final = ("WIX_DEVELOPERS.MANAGE_APP_INSTANCE",)


def stable_id(kind: str, instance_id: str) -> str:
    """A UUID fixed by the instance, so a test can predict it without passing one."""
    # "site" keeps the name the site ID has always been derived from.
    name = f"wix-emulator:{instance_id}" if kind == "site" else f"wix-emulator:{kind}:{instance_id}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


@attrs.frozen
class _Installation:
    instance_id: str
    app_name: str
    site_id: str
    site_display_name: str
    app_version: str = "latest"
    # None for a free instance; Wix sends billing "only in case isFree is false".
    billing: Mapping[str, Any] | None = None
    permissions: tuple[str, ...] = DEFAULT_PERMISSIONS
    available_plans: tuple[Mapping[str, Any], ...] = ()
    origin_instance_id: str | None = None
    free_trial_available: bool = False
    locale: str = "en"
    payment_currency: str = "USD"
    url: str | None = None
    description: str | None = None
    installed_wix_apps: tuple[str, ...] = ()
    owner_email: str | None = None
    owner_id: str = ""
    account_id: str = ""

    @property
    def vendor_product_id(self) -> str | None:
        """The paid plan's ID: billing's ``packageName`` (assumed the same ID), else None."""
        if self.billing is None:
            return None
        package = self.billing.get("packageName")
        return package if isinstance(package, str) and package else None

    def app_instance(self) -> dict[str, Any]:
        """Get App Instance's answer: fields Wix documents, optional ones when they are set."""
        instance: dict[str, Any] = {
            "instanceId": self.instance_id,
            "appName": self.app_name,
            "appVersion": self.app_version,
            "isFree": self.billing is None,
            "permissions": list(self.permissions),
            "availablePlans": [dict(plan) for plan in self.available_plans],
            # Documented: "Whether this app instance was created when another Wix site
            # was cloned"; originInstanceId is "available only when copiedFromTemplate".
            "copiedFromTemplate": self.origin_instance_id is not None,
            "freeTrialAvailable": self.free_trial_available,
        }
        if self.billing is not None:
            instance["billing"] = dict(self.billing)
        if self.origin_instance_id is not None:
            instance["originInstanceId"] = self.origin_instance_id
        site: dict[str, Any] = {
            "siteId": self.site_id,
            "siteDisplayName": self.site_display_name,
            "locale": self.locale,
            "paymentCurrency": self.payment_currency,
            "multilingual": {"isMultiLingual": False, "supportedLanguages": []},
            "installedWixApps": list(self.installed_wix_apps),
        }
        if self.url is not None:  # documented: "Available only when the site has been published"
            site["url"] = self.url
        if self.description is not None:
            site["description"] = self.description
        if self.owner_email is not None:
            # Documented: only with the Read Site Owner Email permission; the emulator
            # sends it whenever the test gave an address.
            site["ownerInfo"] = {"email": self.owner_email, "emailStatus": "VERIFIED_OPT_IN"}
        return {"instance": instance, "site": site}


def make_installation(
    instance_id: object,
    *,
    app_name: object,
    site_id: object,
    site_display_name: object,
    app_version: object,
    billing: object,
    permissions: object,
    available_plans: object,
    origin_instance_id: object,
    free_trial_available: object,
    locale: object,
    payment_currency: object,
    url: object,
    description: object,
    installed_wix_apps: object,
    owner_email: object,
    owner_id: object,
    account_id: object,
) -> _Installation:
    """Check every value ``install`` was given, naming the one that is wrong."""
    instance = checks.text("instance_id", instance_id)
    for name, value in (("app_name", app_name), ("site_display_name", site_display_name)):
        checks.plain_str(name, value)
    for name, value in (
        ("site_id", site_id),
        ("origin_instance_id", origin_instance_id),
        ("url", url),
        ("owner_email", owner_email),
        ("owner_id", owner_id),
        ("account_id", account_id),
    ):
        checks.optional_text(name, value)
    for name, value in (
        ("app_version", app_version),
        ("locale", locale),
        ("payment_currency", payment_currency),
    ):
        checks.text(name, value)
    if description is not None:
        checks.plain_str("description", description)
    if not isinstance(free_trial_available, bool):
        raise TypeError(f"free_trial_available must be a bool, got {free_trial_available!r}")
    plans = _plans(available_plans)
    owner = owner_id if isinstance(owner_id, str) else stable_id("owner", instance)
    return _Installation(
        instance_id=instance,
        app_name=str(app_name),
        site_id=site_id if isinstance(site_id, str) else stable_id("site", instance),
        site_display_name=str(site_display_name),
        app_version=str(app_version),
        billing=None if billing is None else checks.json_object("billing", billing),
        permissions=checks.texts("permissions", permissions),
        available_plans=plans,
        origin_instance_id=origin_instance_id if isinstance(origin_instance_id, str) else None,
        free_trial_available=free_trial_available,
        locale=str(locale),
        payment_currency=str(payment_currency),
        url=url if isinstance(url, str) else None,
        description=description if isinstance(description, str) else None,
        installed_wix_apps=checks.texts("installed_wix_apps", installed_wix_apps),
        owner_email=owner_email if isinstance(owner_email, str) else None,
        owner_id=owner,
        # Assumed: a site owned by one person is on that person's account.
        account_id=account_id if isinstance(account_id, str) else owner,
    )


def _plans(value: object) -> tuple[Mapping[str, Any], ...]:
    if isinstance(value, str | Mapping) or not isinstance(value, Sequence):
        raise TypeError(f"available_plans must be a list of mappings, got {type(value).__name__}")
    return tuple(checks.json_object("available_plans item", plan) for plan in value)
