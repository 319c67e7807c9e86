//! The contract version: which components this host runs (the same major version, up to its
//! minor version) and what a refusal says.

use wasmtime::Engine;
use wasmtime::component::Component;

/// an earlier minor version of the same major version run unchanged.
pub const CONTRACT_VERSION: &str = "1.3.0";

/// The `host` interface's name in the contract.
pub(crate) const HOST_INTERFACE: &str = "export-service:plugin/host@1.3.0";

/// The prefix of the contract's interface names; each ends in `@<version>`.
const CONTRACT_PREFIX: &str = "export-service:plugin/";

/// `major.minor.patch` of a version, when it is one.
fn version_numbers(version: &str) -> Option<(u64, u64, u64)> {
    let mut parts = version.split('.');
    let mut next = || parts.next()?.parse().ok();
    Some((next()?, next()?, next()?))
}

/// The contract version a component was built against: the latest named by the contract
/// interfaces it imports and exports (a version that does not parse counts as the latest, so it
/// is what a refusal names), or `None` when it names none.
pub(crate) fn built_against(engine: &Engine, component: &Component) -> Option<String> {
    let component_type = component.component_type();
    let imports = component_type.imports(engine).map(|(name, _)| name);
    let exports = component_type.exports(engine).map(|(name, _)| name);
    imports
        .chain(exports)
        .filter_map(|name| {
            let (_, version) = name.strip_prefix(CONTRACT_PREFIX)?.split_once('@')?;
            Some(version.to_owned())
        })
        .max_by_key(|version| version_numbers(version).unwrap_or((u64::MAX, 0, 0)))
}

/// Why a component built against `version` cannot run here, when that is the reason: another
/// major version, or a later minor one (it may use what this host lacks).
pub(crate) fn unsupported_contract(version: &str) -> Option<String> {
    let ours = version_numbers(CONTRACT_VERSION)?;
    match version_numbers(version) {
        Some((major, minor, _)) if major == ours.0 && minor <= ours.1 => None,
        _ => Some(format!(
            "it was built against export-service:plugin@{version}; this host runs plugins of \
             {}.0 to {CONTRACT_VERSION} (rebuild it with a matching SDK)",
            ours.0
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_version_is_the_wit_package_version() {
        let wit = include_str!("../../../wit/plugin.wit");
        assert!(
            wit.contains(&format!(
                "package export-service:plugin@{CONTRACT_VERSION};"
            )),
            "wit/plugin.wit declares another version than CONTRACT_VERSION"
        );
        assert!(HOST_INTERFACE.ends_with(&format!("@{CONTRACT_VERSION}")));
    }

    #[test]
    fn earlier_minor_versions_run_and_later_or_other_majors_do_not() {
        assert_eq!(unsupported_contract("1.0.0"), None);
        assert_eq!(unsupported_contract(CONTRACT_VERSION), None);
        for version in ["1.4.0", "2.0.0", "0.9.0", "1.3.0-rc1", "one"] {
            let reason = unsupported_contract(version).expect(version);
            assert!(reason.contains(version), "{reason}");
            assert!(reason.contains("1.0 to 1.3.0"), "{reason}");
        }
    }
}
