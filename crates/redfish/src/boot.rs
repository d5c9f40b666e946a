//! The system's boot override (`ComputerSystem.Boot`): the typed values, what a system
//! resource says about them, and the change to ask for. Pure: the client does the GET and the
//! PATCH.

use serde_json::{json, Value};

use crate::{Capability, RedfishError};

/// A target of `BootSourceOverrideTarget` this client sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootTarget {
    /// `Pxe`: network boot.
    Pxe,
    /// `Hdd`: the local disk.
    Hdd,
    /// `Cd`: the optical drive (or a virtual one).
    Cd,
    /// `BiosSetup`: the firmware's setup screens.
    BiosSetup,
}

impl BootTarget {
    /// Every target, in the order above.
    pub const ALL: [BootTarget; 4] = [
        BootTarget::Pxe,
        BootTarget::Hdd,
        BootTarget::Cd,
        BootTarget::BiosSetup,
    ];

    /// The value as Redfish writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            BootTarget::Pxe => "Pxe",
            BootTarget::Hdd => "Hdd",
            BootTarget::Cd => "Cd",
            BootTarget::BiosSetup => "BiosSetup",
        }
    }

    fn parse(s: &str) -> Option<BootTarget> {
        BootTarget::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// How long an override set by this client holds (`BootSourceOverrideEnabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootPersistence {
    /// `Once`: the next boot only.
    Once,
    /// `Continuous`: every boot until changed.
    Continuous,
}

impl BootPersistence {
    /// The value as Redfish writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            BootPersistence::Once => "Once",
            BootPersistence::Continuous => "Continuous",
        }
    }
}

/// `BootSourceOverrideEnabled` as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootEnabled {
    /// `Disabled` (or not reported): the normal boot order.
    Disabled,
    /// `Once`.
    Once,
    /// `Continuous`.
    Continuous,
}

/// `BootSourceOverrideTarget` as read back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BootSource {
    /// `None`, or not reported: no override target.
    None,
    /// One of the targets this client sets.
    Target(BootTarget),
    /// Another target (`Usb`, `UefiHttp`, `Diags`, an OEM one…) as the service writes it:
    /// untrusted text, at most 64 characters.
    Other(String),
}

/// The system's boot override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOverride {
    /// Whether and how long it holds.
    pub enabled: BootEnabled,
    /// Where it points.
    pub target: BootSource,
    /// Of the targets this client sets, those the service advertises
    /// (`BootSourceOverrideTarget@Redfish.AllowableValues`); `None` when it lists none, in
    /// which case any is tried.
    pub allowed: Option<Vec<BootTarget>>,
}

/// Most advertised values kept for an error message.
const MAX_ALLOWED: usize = 32;
/// Longest service-given value kept.
const MAX_VALUE: usize = 64;

fn bounded(s: &str) -> String {
    s.chars().take(MAX_VALUE).collect()
}

fn boot_object(system: &Value) -> Result<&Value, RedfishError> {
    system
        .get("Boot")
        .filter(|b| b.is_object())
        .ok_or(RedfishError::Unsupported {
            what: Capability::BootOverride,
            value: "",
            allowed: Vec::new(),
        })
}

/// The values of `<property>@Redfish.AllowableValues`, when the service lists them.
fn allowable(boot: &Value, property: &str) -> Option<Vec<String>> {
    let list = boot.get(format!("{property}@Redfish.AllowableValues"))?;
    Some(
        list.as_array()?
            .iter()
            .filter_map(Value::as_str)
            .take(MAX_ALLOWED)
            .map(bounded)
            .collect(),
    )
}

/// The boot override a system resource reports.
pub(crate) fn read(system: &Value) -> Result<BootOverride, RedfishError> {
    let boot = boot_object(system)?;
    // A null is as good as absent: some services write every property, set or not.
    let get = |k: &str| boot.get(k).filter(|v| !v.is_null()).map(Value::as_str);
    let enabled = match get("BootSourceOverrideEnabled") {
        None | Some(Some("Disabled")) => BootEnabled::Disabled,
        Some(Some("Once")) => BootEnabled::Once,
        Some(Some("Continuous")) => BootEnabled::Continuous,
        Some(_) => {
            return Err(RedfishError::Malformed(
                "system Boot.BootSourceOverrideEnabled",
            ))
        }
    };
    let target = match get("BootSourceOverrideTarget") {
        None | Some(Some("None")) => BootSource::None,
        Some(Some(t)) => BootTarget::parse(t)
            .map(BootSource::Target)
            .unwrap_or_else(|| BootSource::Other(bounded(t))),
        Some(None) => {
            return Err(RedfishError::Malformed(
                "system Boot.BootSourceOverrideTarget",
            ))
        }
    };
    let allowed = allowable(boot, "BootSourceOverrideTarget")
        .map(|list| list.iter().filter_map(|t| BootTarget::parse(t)).collect());
    Ok(BootOverride {
        enabled,
        target,
        allowed,
    })
}

/// The PATCH body that sets the override, once the system resource shows that the service
/// offers a boot override with this target and persistence (where it lists what it allows).
pub(crate) fn change(
    system: &Value,
    target: BootTarget,
    persistence: BootPersistence,
) -> Result<Value, RedfishError> {
    let boot = boot_object(system)?;
    let checks = [
        (
            Capability::BootTarget,
            "BootSourceOverrideTarget",
            target.as_str(),
        ),
        (
            Capability::BootPersistence,
            "BootSourceOverrideEnabled",
            persistence.as_str(),
        ),
    ];
    for (what, property, value) in checks {
        if let Some(allowed) = allowable(boot, property) {
            if !allowed.iter().any(|a| a == value) {
                return Err(RedfishError::Unsupported {
                    what,
                    value,
                    allowed,
                });
            }
        }
    }
    Ok(json!({"Boot": {
        "BootSourceOverrideTarget": target.as_str(),
        "BootSourceOverrideEnabled": persistence.as_str(),
    }}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sushy_like() -> Value {
        json!({"Boot": {
            "BootSourceOverrideEnabled": "Continuous",
            "BootSourceOverrideTarget": "Hdd",
            "BootSourceOverrideTarget@Redfish.AllowableValues": ["Pxe", "Cd", "Hdd", "UefiHttp"],
            "BootSourceOverrideMode": "UEFI"
        }})
    }

    #[test]
    fn reads_the_override_and_the_targets_we_can_set() {
        assert_eq!(
            read(&sushy_like()).unwrap(),
            BootOverride {
                enabled: BootEnabled::Continuous,
                target: BootSource::Target(BootTarget::Hdd),
                allowed: Some(vec![BootTarget::Pxe, BootTarget::Cd, BootTarget::Hdd]),
            }
        );
        let b = read(&json!({"Boot": {"BootSourceOverrideTarget": "None",
                                      "BootSourceOverrideEnabled": null}}))
        .unwrap();
        assert_eq!(
            (b.enabled, b.target, b.allowed),
            (BootEnabled::Disabled, BootSource::None, None)
        );
        let b = read(&json!({"Boot": {"BootSourceOverrideEnabled": "Once",
                                      "BootSourceOverrideTarget": "UefiHttp"}}))
        .unwrap();
        assert_eq!(b.target, BootSource::Other("UefiHttp".into()));
        let long = "X".repeat(1000);
        let b = read(&json!({"Boot": {"BootSourceOverrideTarget": long}})).unwrap();
        assert_eq!(b.target, BootSource::Other("X".repeat(MAX_VALUE)));
    }

    #[test]
    fn odd_values_are_errors_not_guesses() {
        for boot in [
            json!({"Boot": {"BootSourceOverrideEnabled": "Sometimes"}}),
            json!({"Boot": {"BootSourceOverrideEnabled": true}}),
            json!({"Boot": {"BootSourceOverrideTarget": 3}}),
        ] {
            assert_eq!(read(&boot).unwrap_err().kind(), "malformed_reply", "{boot}");
        }
        for system in [json!({}), json!({"Boot": "Pxe"})] {
            let err = read(&system).unwrap_err();
            assert_eq!(err.kind(), "unsupported_action");
            assert_eq!(err.to_string(), "boot override: not offered by the BMC");
        }
    }

    #[test]
    fn the_change_asked_for() {
        assert_eq!(
            change(&sushy_like(), BootTarget::Pxe, BootPersistence::Once).unwrap(),
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}})
        );
        // No list: any target is tried.
        let bare = json!({"Boot": {}});
        assert!(change(&bare, BootTarget::BiosSetup, BootPersistence::Continuous).is_ok());
    }

    #[test]
    fn a_target_or_persistence_not_advertised_is_refused() {
        let err = change(&sushy_like(), BootTarget::BiosSetup, BootPersistence::Once).unwrap_err();
        assert_eq!(
            err,
            RedfishError::Unsupported {
                what: Capability::BootTarget,
                value: "BiosSetup",
                allowed: vec!["Pxe".into(), "Cd".into(), "Hdd".into(), "UefiHttp".into()],
            }
        );
        assert_eq!(
            err.to_string(),
            "boot target BiosSetup is not advertised by the BMC (it allows Pxe, Cd, Hdd, UefiHttp)"
        );
        let once_only = json!({"Boot": {
            "BootSourceOverrideEnabled@Redfish.AllowableValues": ["Once", "Disabled"]
        }});
        let err = change(&once_only, BootTarget::Pxe, BootPersistence::Continuous).unwrap_err();
        assert!(
            matches!(
                err,
                RedfishError::Unsupported {
                    what: Capability::BootPersistence,
                    value: "Continuous",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
